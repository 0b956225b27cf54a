"""`bts prepare` and `bts predict --sequence / --native`: a patient's own series (DICOM folders, NIfTI files) from the
command line; bad input is one line on stderr and leaves nothing in the output folder."""
import json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bts_course import native as nv
from bts_course.cli import main
from bts_course.data import MODALITIES, example_patches, read_case

BTS = str(Path(sys.executable).with_name("bts"))


def image_of(array):
    "An `(X, Y, Z)` array in BraTS voxel order as a 1 mm image, identity direction (as the BraTS files read)"
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, np.float32).transpose(2, 1, 0)))
    image.SetOrigin((0.0, -159.0, 0.0))
    return image


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    "The shipped patch as a scanner might export it: FLAIR and T2w moved, as DICOM; T1w in RAS order and T1gd as NIfTI"
    root = tmp_path_factory.mktemp("series")
    patch = example_patches()[0]
    images = {m: image_of(patch.x[c]) for c, m in enumerate(MODALITIES)}
    centre = nv.image_centre(images["T1gd"])
    flair = nv.simulate_acquisition(images["FLAIR"], nv.rigid_transform((0, 0, 10), (12, -8, 1), centre), (0.5, 0.5, 2.0))
    t2 = nv.simulate_acquisition(images["T2w"], nv.rigid_transform((0, 0, -6), (-5, 9, 0), centre), (0.8, 0.8, 1.5),
                                 tuple(nv.rigid_transform((0, 0, 15)).GetMatrix()))
    t1 = nv.simulate_acquisition(images["T1w"], None, (1, 1, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    nv.write_dicom_series(flair, root / "patient" / "flair", "AX FLAIR")
    nv.write_dicom_series(t2, root / "patient" / "t2", "OBL T2")
    sitk.WriteImage(t1, str(root / "patient" / "t1.nii.gz"))
    sitk.WriteImage(images["T1gd"], str(root / "patient" / "t1ce.nii.gz"))
    return root / "patient"


def sequence_args(folder):
    return ["--sequence", f"FLAIR={folder / 'flair'}", f"T1w={folder / 't1.nii.gz'}", f"T1gd={folder / 't1ce.nii.gz'}",
            f"T2w={folder / 't2'}"]


def one_line_error(capsys, argv, *needles, code=1):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles: assert needle in err[0], err[0]


def test_prepare_writes_an_aligned_brats_case(series, tmp_path):
    "The real entry point: four BraTS-named NIfTI files on the 1 mm grid, read_case reads them, the report beside"
    out = tmp_path / "aligned"
    result = subprocess.run([BTS, "prepare", *sequence_args(series), "-o", out, "--name", "patient"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 sequences registered to T1gd" in result.stdout and "FLAIR: rotation" in result.stdout
    case = read_case(out)
    assert case.layout == "brats2021" and case.image.shape == (160, 160, 16, 4)
    assert {"report.html", "report.json", "FLAIR.png"} <= {p.name for p in out.iterdir()}
    registrations = json.loads((out / "report.json").read_text(encoding="utf-8"))["registrations"]
    assert [r["sequence"] for r in registrations] == list(MODALITIES)
    assert not any(r.get("looks misaligned") for r in registrations)


def test_predict_a_patients_own_series(series, tmp_path, capsys):
    "A folder named by sequence (--native): labels on the T1gd's grid and on every other, and the report"
    out = tmp_path / "labels"
    assert main(["predict", str(series), "--native", "--all-grids", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "whole tumor" in printed and "ml" in printed
    names = {p.name for p in out.iterdir()}
    assert {f"labels_{m}.nii.gz" for m in MODALITIES} | {"report.html", "report.json"} <= names
    labels = sitk.ReadImage(str(out / "labels_FLAIR.nii.gz"))
    flair = nv.read_series(series / "flair")
    assert labels.GetSize() == flair.GetSize() and np.allclose(labels.GetOrigin(), flair.GetOrigin(), atol=1e-3)
    volume = json.loads((out / "report.json").read_text(encoding="utf-8"))["volumes_ml"]["Whole tumor"]
    t1gd = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels_T1gd.nii.gz")))
    assert volume == pytest.approx(np.count_nonzero(t1gd) / 1000, abs=0.01)   # the T1gd's grid is 1 mm and the model's


def test_bad_usage_is_one_line(series, tmp_path, capsys):
    out = tmp_path / "out"
    one_line_error(capsys, ["prepare", "--sequence", "FLAIR", "-o", str(out)], "--sequence FLAIR: expected NAME=VALUE", code=2)
    one_line_error(capsys, ["prepare", "--sequence", f"DWI={series}", "-o", str(out)], "unknown sequence 'DWI'", code=2)
    one_line_error(capsys, ["prepare", "-o", str(out)], "give a folder of series", code=2)
    one_line_error(capsys, ["prepare", *sequence_args(series)[:4], "-o", str(out)], "missing sequence(s) T2w")
    one_line_error(capsys, ["predict", "-o", str(out)], "required: input", code=2)
    assert not out.exists()


def test_several_series_in_a_folder_are_listed(series, tmp_path, capsys):
    both = tmp_path / "both"
    both.mkdir()
    for sub in ("flair", "t2"):
        for f in (series / sub).iterdir(): (both / f"{sub}_{f.name}").write_bytes(f.read_bytes())
    args = ["--sequence", f"FLAIR={both}", f"T1w={series / 't1.nii.gz'}", f"T1gd={series / 't1ce.nii.gz'}", f"T2w={series / 't2'}"]
    one_line_error(capsys, ["prepare", *args, "-o", str(tmp_path / "out")], "2 DICOM series; pick one", "AX FLAIR", "OBL T2")
    uid = nv.list_series(series / "flair")[0]["uid"]
    assert main(["prepare", *args, "--series", f"FLAIR={uid}", "-o", str(tmp_path / "out")]) == 0


def test_a_skull_is_refused_and_nothing_is_written(series, tmp_path, capsys):
    head = tmp_path / "head"
    head.mkdir()
    t1gd = sitk.ReadImage(str(series / "t1ce.nii.gz"))
    noisy = t1gd + sitk.Cast(sitk.AdditiveGaussianNoise(t1gd * 0 + 20, 5.0, 0.0, 0), sitk.sitkFloat32)  # scanner noise in the air
    sitk.WriteImage(noisy, str(head / "t1ce.nii.gz"))
    args = [*sequence_args(series)[:3], f"T1gd={head / 't1ce.nii.gz'}", sequence_args(series)[4]]
    out = tmp_path / "out"
    one_line_error(capsys, ["prepare", *args, "-o", str(out)], "does not look skull-stripped", "--allow-unstripped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]                 # no output, no partial folder
