"The model that ships with the package: present, intact, as good as its card says; bad weights files explained"
import json, math, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from bts_course import pretrained
from bts_course.data import MODALITIES, example_patches, read_case
from bts_course.labels import probabilities_to_labels
from bts_course.training import model_arrays

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BRATS = SHARED / "brats2018"
needs_brats = pytest.mark.skipif(not BRATS.is_dir(), reason=f"the real BraTS 2018 cases are not at {BRATS} (../shared)")


@pytest.fixture(scope="module")
def card():
    return pretrained.read_card()


@pytest.fixture(scope="module")
def model():
    return pretrained.load_pretrained()


def numpy_dice(y, p, eps=1e-5):
    "The course's dice_coefficient of one sample `(C, X, Y, Z)`, in numpy: the mean over classes"
    return float(np.mean((2 * (y * p).sum((1, 2, 3)) + eps) / (y.sum((1, 2, 3)) + p.sum((1, 2, 3)) + eps)))


def test_shipped_weights_are_small_and_match_their_checksum(card):
    weights = pretrained.check_weights()
    assert weights.parent == pretrained.shipped_model_dir()
    assert weights.stat().st_size == card["bytes"] <= 10 * 2**20
    assert pretrained.file_sha256(weights) == card["sha256"]
    assert (weights.parent / pretrained.CARD_TEXT).read_text(encoding="utf-8").startswith("#")


def test_card_states_what_issue_19_asks_for(card):
    assert card["split"]["valid"] and not set(card["split"]["valid"]) & set(card["split"]["train"])
    assert card["training"]["seconds"] > 0 and card["training"]["args"]["seed"] == 0
    assert len(card["training"]["curve"]["val_dice_coefficient"]) == card["training"]["epochs"]
    cases = {r["case"] for r in card["validation"]["cases"]}
    assert cases == set(card["split"]["valid"])
    for key, value in card["validation"]["mean"].items():   # the means are the means of the per-case rows
        rows = [r[key] for r in card["validation"]["cases"] if r[key] is not None]
        assert value == pytest.approx(np.mean(rows), abs=1e-4), key
    assert len(card["threshold"]) == 3 and all(0 < t < 1 for t in card["threshold"])
    assert "clinical" in (pretrained.shipped_model_dir() / pretrained.CARD_TEXT).read_text(encoding="utf-8")


def test_shipped_model_is_compiled_and_reaches_its_cards_patch_dice(model, card):
    assert model.loss is not None and model.input_shape == (None, len(MODALITIES), None, None, None)
    patch = next(p for p in example_patches() if p.name == card["shipped_patch"]["name"])
    X, y = model_arrays(patch.x, patch.y)
    probs = model.predict(X[None], verbose=0)[0]
    assert probs.shape == y.shape and probs.dtype == np.float32 and 0 <= probs.min() and probs.max() <= 1
    assert numpy_dice(y, probs) == pytest.approx(card["shipped_patch"]["dice_coefficient"], abs=0.01)
    scores = model.evaluate(X[None], y[None], verbose=0, return_dict=True)   # the course's metrics, compiled in
    assert scores["dice_coefficient"] == pytest.approx(numpy_dice(y, probs), abs=1e-3)
    assert math.isfinite(scores["loss"]) and 0 <= scores["loss"] <= 1


def test_corrupt_truncated_and_foreign_weights_say_what_is_wrong(tmp_path, card):
    folder = tmp_path / "model"
    shutil.copytree(pretrained.shipped_model_dir(), folder)
    weights = folder / card["weights"]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])                              # truncated
    with pytest.raises(ValueError, match=r"SHA-256.*truncated.*the card says"):
        pretrained.load_pretrained(folder)
    weights.unlink()                                                         # missing
    with pytest.raises(FileNotFoundError, match="missing"):
        pretrained.load_pretrained(folder)
    weights.write_bytes(b"not an HDF5 file" * 100)                           # foreign, with a card that vouches for it
    meta = json.loads((folder / pretrained.CARD_FILE).read_text(encoding="utf-8"))
    meta["sha256"], meta["bytes"] = pretrained.file_sha256(weights), weights.stat().st_size
    (folder / pretrained.CARD_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=str(weights.name) + ".*do not fit"):
        pretrained.load_pretrained(folder)
    (folder / pretrained.CARD_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        pretrained.read_card(folder)
    with pytest.raises(FileNotFoundError, match="no model.json"):
        pretrained.read_card(tmp_path)


def test_bts_predict_uses_the_shipped_model_and_its_thresholds_on_a_brats2023_folder(tmp_path, card):
    "No --model: the shipped model with the card's per-class thresholds, on a BraTS 2023 folder (its own names and codes)"
    import nibabel as nib
    import pandas as pd
    from bts_course.data import LAYOUTS, save_nifti
    from bts_course.inference import predict_volume
    from bts_course.phantom import make_phantom
    case = make_phantom(3, shape=(48, 56, 40))
    layout = LAYOUTS["brats2023"]
    folder = tmp_path / "cases" / "BraTS-GLI-00003-000"
    for c, suffix in enumerate(layout.modality_suffixes): save_nifti(case.image[..., c], folder / f"{folder.name}{suffix}.nii.gz")
    to_2023 = {course: code for code, course in layout.label_map.items()}
    save_nifti(np.vectorize(to_2023.get)(case.label).astype(np.uint8), folder / f"{folder.name}{layout.label_suffix}.nii.gz")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    bts = Path(sys.executable).with_name("bts")
    run = subprocess.run([str(bts), "predict", str(folder.parent), "-o", str(tmp_path / "out"), "--scores", str(tmp_path / "s.csv")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    written = np.asarray(nib.load(tmp_path / "out" / f"{folder.name}.nii.gz").dataobj)
    expected = probabilities_to_labels(predict_volume(pretrained.load_pretrained(), case.image, progress=False), card["threshold"])
    assert (written == expected).mean() > 0.999   # the same labels, up to float noise at the thresholds
    assert pd.read_csv(tmp_path / "s.csv")["case"].tolist() == [folder.name]


@needs_brats
def test_a_validation_case_scores_as_the_card_says(model, card):
    "Whole-scan Dice of the first validation case, recomputed here at threshold 0.5, against the card's row for it"
    from bts_course.inference import predict_volume
    from bts_course.scores import brats_region_metrics
    row = card["validation"]["cases"][0]
    case = read_case(BRATS / row["case"])
    dice = brats_region_metrics(probabilities_to_labels(predict_volume(model, case.image, progress=False)), case.label)["Dice"]
    for region, value in dice.items():
        if row[f"{region} Dice"] is not None: assert value == pytest.approx(row[f"{region} Dice"], abs=0.01), region


@needs_brats
def test_the_split_is_by_case_and_never_shares_a_patient():
    split = json.loads((Path(__file__).resolve().parents[1] / "recipes" / "brats2018" / "split.json").read_text(encoding="utf-8"))
    on_disk = {p.name for p in BRATS.iterdir() if p.is_dir()}
    assert set(split["train"]) | set(split["valid"]) <= on_disk
    assert not set(split["train"]) & set(split["valid"]) and len(split["valid"]) >= 2


def test_readme_quotes_the_card(card):
    "The README's table of the shipped model says what its card says"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    held = card["decisions"]["dice_at_thresholds_held_out"]
    for region, name in (("Whole tumor", "whole tumour"), ("Tumor core", "tumour core"), ("Enhancing tumor", "enhancing tumour")):
        assert (f"| {name} | {card['validation']['mean'][f'{region} Dice']:.3f} | {held[region]:.3f} | "
                f"{card['targets'][region]:.2f} |") in readme, region
    assert f"{card['n_parameters']:,} parameters" in readme
    assert f"is {card['course_patches']['dice_coefficient']:.3f}," in readme
