"`bts demo --quick`: the whole course end to end at toy sizes, and its outputs readable"
import json, subprocess, sys

import numpy as np
import pandas as pd
import pytest
import nibabel as nib
import imageio.v3 as iio

from bts_course.demo import QUICK, OUTPUTS, MARKER


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "bts_demo"
    bts = [sys.executable, "-c", "import sys; from bts_course.cli import main; sys.exit(main(sys.argv[1:]))"]
    run = subprocess.run(bts + ["demo", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return out, run.stdout


def test_demo_writes_every_output(demo_out):
    out, stdout = demo_out
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    for step in range(1, 6):
        assert f"[{step}/5]" in stdout
    assert "Written:" in stdout and str(out / "truth_vs_prediction.gif") in stdout
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker["complete"] is True and marker["settings"]["shape"] == list(QUICK.shape)


def test_demo_nifti_files(demo_out):
    out, _ = demo_out
    pred = nib.load(out / "prediction.nii.gz")
    assert pred.shape == QUICK.shape and pred.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}
    images = sorted((out / "cases" / "imagesTr").glob("*.nii.gz"))
    assert len(images) == QUICK.n_cases
    assert nib.load(images[0]).shape == QUICK.shape + (4,)
    truth = nib.load(out / "test" / "labelsTr" / "phantom_1000.nii.gz")
    assert truth.shape == QUICK.shape
    np.testing.assert_allclose(pred.affine, truth.affine)


def test_demo_tables(demo_out):
    out, stdout = demo_out
    per_class = pd.read_csv(out / "metrics_per_class.csv")
    assert list(per_class.columns) == ["metric", "Edema", "Non-Enhancing Tumor", "Enhancing Tumor"]
    assert list(per_class.metric) == ["Sensitivity", "Specificity"]
    regions = pd.read_csv(out / "metrics_regions.csv")
    assert list(regions.columns) == ["region", "Dice", "Sensitivity", "Specificity", "HD95"]
    assert list(regions.region) == ["Whole tumor", "Tumor core", "Enhancing tumor"]
    assert regions.Dice.between(0, 1).all()
    assert "Whole tumor" in stdout and "Sensitivity" in stdout  # the tables are printed too


def test_demo_pictures(demo_out):
    out, _ = demo_out
    frames = iio.imread(out / "truth_vs_prediction.gif", index=None)
    x, y, z = QUICK.shape
    assert frames.shape[0] == z  # one frame per slice
    assert frames.shape[2] == 2 * x + 2  # truth and prediction side by side, 2 voxels apart
    assert frames.shape[1] >= y
    for name in ("prediction.png", "training.png"):
        png = iio.imread(out / name)
        assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100
    log = pd.read_csv(out / "run" / "log.csv")
    assert {"loss", "val_loss", "dice_coefficient"} <= set(log.columns) and len(log) >= 1
    assert (out / "run" / "best.keras").is_file()


def test_demo_runs_again_in_its_folder_but_refuses_others(demo_out, tmp_path):
    from bts_course.cli import main as bts
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    assert bts(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
