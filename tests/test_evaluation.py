"Evaluation the course's way (bts_course.evaluation): course tiles, predict_and_viz, case and folder score tables"
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bts_course.phantom import make_phantom
from bts_course.data import save_nifti
from bts_course.labels import probabilities_to_labels
from bts_course.preprocess import standardize
from bts_course import evaluation as ev
from bts_course import inference as inf
import bts_course.data, bts_course.viz
from bts_course.metrics import soft_dice_loss
from bts_course.model import unet_model_3d



from stand_ins import pointwise_model, tiny_unet


@pytest.fixture(scope="module")
def case():
    return make_phantom(3, shape=(40, 44, 28))


def test_course_tiles(case):
    m = tiny_unet()
    probs = ev.predict_course_tiles(m, case.image, patch_size=(16, 16, 8), progress=False)
    assert probs.shape == case.image.shape[:3] + (3,) and probs.dtype == np.float32
    first = ev.predict_patch(m, standardize(np.moveaxis(case.image[:16, :16, :8], -1, 0)))
    np.testing.assert_allclose(probs[:16, :16, :8], np.moveaxis(first, 0, -1), atol=1e-5)
    # the last tiles hang over the edge: padded, and only the part inside written back
    last = np.zeros((4, 16, 16, 8), np.float32)
    last[:, :8, :12, :4] = np.moveaxis(case.image[32:, 32:, 24:], -1, 0)
    expect = ev.predict_patch(m, standardize(last))[:, :8, :12, :4]
    np.testing.assert_allclose(probs[32:, 32:, 24:], np.moveaxis(expect, 0, -1), atol=1e-5)


def test_predict_and_viz_honours_threshold_and_ignores_truth(case):
    m = pointwise_model(seed=1)
    loc = tuple(s // 2 for s in case.label.shape)
    labels, fig = ev.predict_and_viz(case.image, case.label, m, threshold=0.5, loc=loc, progress=False)
    probs = inf.predict_volume(m, case.image, progress=False)
    np.testing.assert_array_equal(labels, probabilities_to_labels(probs, 0.5))
    high, _ = ev.predict_and_viz(case.image, case.label, m, threshold=0.7, loc=loc, progress=False)
    np.testing.assert_array_equal(high, probabilities_to_labels(probs, 0.7))
    blind, _ = ev.predict_and_viz(case.image, np.zeros_like(case.label), m, threshold=0.5, loc=loc, progress=False)
    np.testing.assert_array_equal(blind, labels)
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match="inside the scan"):
        ev.predict_and_viz(case.image, case.label, m, loc=(100, 0, 0))



def test_predict_and_viz_checks_the_scan_once(case, monkeypatch):
    scans = []
    def counting(image, *args, **kwargs):
        if np.shape(image)[:3] == case.image.shape[:3]: scans.append(1)
        return bts_course.data.check_image(image, *args, **kwargs)
    for module in (ev, inf, bts_course.viz): monkeypatch.setattr(module, "check_image", counting)
    loc = tuple(s // 2 for s in case.label.shape)
    labels, fig = ev.predict_and_viz(case.image, case.label, tiny_unet(), loc=loc, progress=False)
    assert len(scans) == 1 and len(fig.axes) == 6  # predicting and drawing (two label maps) reuse the checked scan
    scans.clear()
    inf.predict_volume(tiny_unet(), case.image, progress=False)
    assert len(scans) == 1


def test_predict_and_viz_reads_a_region_model_as_regions(case):
    m = unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=2, n_base_filters=2, outputs="regions")
    loc = tuple(s // 2 for s in case.label.shape)
    labels, _ = ev.predict_and_viz(case.image, case.label, m, loc=loc, threshold=[0.5, 0.4, 0.6], progress=False)
    probs = inf.predict_volume(m, case.image, progress=False)
    np.testing.assert_array_equal(labels, probabilities_to_labels(probs, [0.5, 0.4, 0.6], outputs="regions"))
    with pytest.raises(ValueError, match="nested"):  # argmax compares exclusive classes: refused for regions, as predict_case does
        ev.predict_and_viz(case.image, case.label, m, loc=loc, mode="argmax", progress=False)

# ---------------------------------------------------------------- evaluation tables
def write_msd(root: Path, seeds, shape=(32, 32, 24)):
    for seed in seeds:
        c = make_phantom(seed, shape)
        save_nifti(c.image, root / "imagesTr" / f"BRATS_{seed:03d}.nii.gz", c.affine)
        save_nifti(c.label, root / "labelsTr" / f"BRATS_{seed:03d}.nii.gz", c.affine)


def test_evaluate_case_against_numpy(case):
    m = pointwise_model(seed=2)
    result = ev.evaluate_case(m, case, progress=False)
    pred, truth = result.labels, case.label
    for k, name in enumerate(("Edema", "Non-Enhancing Tumor", "Enhancing Tumor"), 1):
        p, t = pred == k, truth == k
        if t.any():
            assert result.sens_spec.loc["Sensitivity", name] == pytest.approx((p & t).sum() / t.sum())
        assert result.sens_spec.loc["Specificity", name] == pytest.approx((~p & ~t).sum() / (~t).sum())
    p, t = pred > 0, truth > 0
    assert result.regions.loc["Whole tumor", "Dice"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
    row = result.row()
    assert row["case"] == case.name and "Whole tumor HD95" in row and "Edema sensitivity" in row
    no_label = type(case)(case.image, None, case.affine, "x")
    with pytest.raises(ValueError, match="no label"):
        ev.evaluate_case(m, no_label)


def test_evaluate_case_conventions(case):
    "The official BraTS convention by default, 'medpy' on request: they differ only where a region is missed or absent"
    m = pointwise_model(seed=2)
    official = ev.evaluate_case(m, case, progress=False)
    medpy = ev.evaluate_case(m, case, convention="medpy", progress=False)
    assert official.convention == "brats" and medpy.convention == "medpy" and official.row()["convention"] == "brats"
    np.testing.assert_array_equal(official.labels, medpy.labels)
    for region in official.regions.index:
        p, t = np.isin(official.labels, ev.BRATS_REGIONS[region]), np.isin(case.label, ev.BRATS_REGIONS[region])
        if (p & t).any():
            assert official.regions.loc[region].tolist() == medpy.regions.loc[region].tolist()
        elif p.any() or t.any():
            assert official.regions.loc[region, "HD95"] == 373.0 and medpy.regions.loc[region, "HD95"] != 373.0
    with pytest.raises(ValueError, match="convention must be one of 'brats', 'medpy'"):
        ev.evaluate_case(m, case, convention="leaderboard", progress=False)


def test_score_prediction_and_voxel_spacing(case):
    spaced = type(case)(case.image, case.label, np.diag([1.0, 1.0, 2.5, 1.0]), "spaced")
    pred = np.roll(case.label, 1, axis=2)
    result = ev.score_prediction(spaced, pred, seconds=2.0)
    assert ev.voxel_spacing(spaced.affine) == (1.0, 1.0, 2.5)
    assert result.probabilities is None and result.row()["seconds"] == 2.0
    # HD95 in mm: the same one-slice shift costs 2.5 mm where it cost 1 mm
    one_mm = ev.score_prediction(case, pred).regions["HD95"]
    assert (result.regions["HD95"] >= one_mm).all() and result.regions["HD95"].max() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="no label"):
        ev.score_prediction(type(case)(case.image, None, case.affine, "x"), pred)


def test_summarize_scores_counts_nan_and_inf():
    "Mean and median over the cases with a number; NaN (nothing to score) and inf (medpy's miss) counted, never averaged"
    cols = {f"{r} {s}": [] for r in ev.BRATS_REGIONS for s in ev.REGION_COLUMNS}
    table = pd.DataFrame({c: [0.8, 0.6, 1.0, 0.2] for c in cols} | {"case": list("abcd")})
    table["Enhancing tumor Dice"] = [0.9, np.nan, 0.5, np.nan]
    table["Enhancing tumor HD95"] = [2.0, np.nan, np.inf, 373.0]
    summary = ev.summarize_scores(table)
    assert list(summary.columns) == ["mean", "median", "cases", "NaN", "inf"]
    assert summary.index.names == ["region", "score"] and len(summary) == 6
    wt = summary.loc[("Whole tumor", "Dice")]
    assert (wt["mean"], wt["median"], wt["cases"], wt["NaN"], wt["inf"]) == (pytest.approx(0.65), pytest.approx(0.7), 4, 0, 0)
    et = summary.loc[("Enhancing tumor", "Dice")]
    assert (et["mean"], et["cases"], et["NaN"]) == (pytest.approx(0.7), 2, 2)
    hd = summary.loc[("Enhancing tumor", "HD95")]
    assert (hd["mean"], hd["median"], hd["cases"], hd["NaN"], hd["inf"]) == (pytest.approx(187.5), pytest.approx(187.5), 2, 1, 1)
    assert np.isfinite(summary["mean"]).all()
    nothing = table.assign(**{"Tumor core Dice": np.nan})
    assert np.isnan(ev.summarize_scores(nothing).loc[("Tumor core", "Dice"), "mean"])
    assert list(ev.summarize_scores(table, "Sensitivity").index.get_level_values("score")) == ["Sensitivity"] * 3
    with pytest.raises(ValueError, match="unknown score"):
        ev.summarize_scores(table, ("Dice", "IoU"))
    with pytest.raises(ValueError, match="no column 'Whole tumor Dice'"):
        ev.summarize_scores(table.drop(columns="Whole tumor Dice"))


def test_evaluate_folder_writes_csv(tmp_path):
    write_msd(tmp_path / "data", (5, 6))
    (tmp_path / "data" / "imagesTr" / "._BRATS_005.nii.gz").write_bytes(b"macOS junk")
    m = pointwise_model(seed=3)
    table = ev.evaluate_folder(m, tmp_path / "data", tmp_path / "out" / "scores.csv", progress=False)
    back = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(back.case) == ["BRATS_005.nii.gz", "BRATS_006.nii.gz"]
    assert {"Edema sensitivity", "Enhancing Tumor specificity", "Tumor core Dice", "Whole tumor HD95", "seconds"} <= set(back.columns)
    np.testing.assert_allclose(back["Whole tumor Dice"], table["Whole tumor Dice"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scores.csv"]


def test_evaluate_folder_convention_and_summary(tmp_path):
    write_msd(tmp_path / "data", (7, 8))
    m = pointwise_model(seed=3)
    official = ev.evaluate_folder(m, tmp_path / "data", progress=False)
    medpy = ev.evaluate_folder(m, tmp_path / "data", progress=False, convention="medpy")
    assert set(official.convention) == {"brats"} and set(medpy.convention) == {"medpy"}
    np.testing.assert_array_equal(official["Whole tumor Sensitivity"], medpy["Whole tumor Sensitivity"])
    summary = ev.summarize_scores(official)
    assert summary.loc[("Whole tumor", "Dice"), "cases"] + summary.loc[("Whole tumor", "Dice"), "NaN"] == 2
    assert np.isfinite(summary["mean"].dropna()).all()
    with pytest.raises(ValueError, match="convention must be one of"):
        ev.evaluate_folder(m, tmp_path / "data", progress=False, convention="MedPy")


# ---------------------------------------------------------------- bts predict --scores
def test_bts_predict_scores(tmp_path, capsys):
    "Every predicted case with a label map is scored: the CSV equals score_prediction on the written label maps"
    import nibabel as nib
    from bts_course.cli import main as bts
    from bts_course.data import read_case
    write_msd(tmp_path / "data", (11, 12))
    save_nifti(make_phantom(13, (32, 32, 24)).image, tmp_path / "data" / "imagesTr" / "BRATS_013.nii.gz")  # no label map
    model_file = tmp_path / "m.keras"
    pointwise_model(seed=4).save(model_file)
    out, scores = tmp_path / "out", tmp_path / "scores" / "scores.csv"
    assert bts(["predict", str(tmp_path / "data"), "-o", str(out), "--model", str(model_file), "--scores", str(scores)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(scores)
    assert list(table.case) == ["BRATS_011.nii.gz", "BRATS_012.nii.gz"] and set(table.convention) == {"brats"}
    for name in table.case:
        case = read_case(tmp_path / "data" / "imagesTr" / name)
        labels = np.asarray(nib.load(str(out / name)).dataobj)
        want = ev.score_prediction(case, labels).row()
        got = table.set_index("case").loc[name]
        for column in ("Edema sensitivity", "Whole tumor Dice", "Tumor core HD95", "Enhancing tumor Dice"):
            a, b = float(got[column]), want[column]
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12), column
    assert "scores of 2 case(s) (brats convention)" in printed and "1 case(s) without a label map not scored" in printed
    summary = ev.summarize_scores(table).round(4).to_string()
    assert summary in printed                                   # the summary is printed as summarize_scores makes it
    assert sorted(p.name for p in out.iterdir()) == ["BRATS_011.nii.gz", "BRATS_012.nii.gz", "BRATS_013.nii.gz"]

    medpy_csv = tmp_path / "medpy.csv"
    assert bts(["predict", str(tmp_path / "data"), "-o", str(out), "--model", str(model_file), "--scores", str(medpy_csv),
                "--convention", "medpy"]) == 0
    assert set(pd.read_csv(medpy_csv).convention) == {"medpy"}
    capsys.readouterr()
    for argv, needle in ((["--convention", "medpy"], "--convention goes with --scores"), (["--conv=brats"], "goes with --scores"),
                         (["--scores", str(tmp_path / "s.txt")], "must end with .csv"),
                         (["--scores", str(medpy_csv), "--convention", "bratz"], "invalid choice")):
        assert bts(["predict", str(tmp_path / "data"), "-o", str(out), "--model", str(model_file), *argv]) == 2
        assert needle in capsys.readouterr().err
    # no label map anywhere: the label maps are written, then one clear error about the scores
    unlabelled = tmp_path / "unlabelled" / "imagesTr"
    save_nifti(make_phantom(14, (32, 32, 24)).image, unlabelled / "BRATS_014.nii.gz")
    assert bts(["predict", str(unlabelled.parent), "-o", str(tmp_path / "o2"), "--model", str(model_file),
                "--scores", str(tmp_path / "none.csv")]) == 1
    assert "none of the 1 case(s) has a label map" in capsys.readouterr().err
    assert (tmp_path / "o2" / "BRATS_014.nii.gz").is_file() and not (tmp_path / "none.csv").exists()
