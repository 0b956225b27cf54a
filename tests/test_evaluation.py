"Evaluation the course's way (bts_course.evaluation): course tiles, predict_and_viz, case and folder score tables"
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bts_course.model import unet_model_3d  # imports TensorFlow quietly
import keras
from bts_course.phantom import make_phantom
from bts_course.data import probabilities_to_labels, save_nifti
from bts_course.metrics import soft_dice_loss
from bts_course.preprocess import standardize
from bts_course import evaluation as ev
from bts_course import inference as inf



# ---------------------------------------------------------------- stand-in models
def pointwise_model(channels=4, n_labels=3, seed=0):
    "Channels-first 1x1x1 convolution + sigmoid: each output voxel depends on its own input voxel only"
    keras.utils.set_random_seed(seed)
    inp = keras.Input((channels, None, None, None))
    x = keras.layers.Permute((2, 3, 4, 1))(inp)
    x = keras.layers.Conv3D(n_labels, 1, activation="sigmoid")(x)
    return keras.Model(inp, keras.layers.Permute((4, 1, 2, 3))(x))


def tiny_unet(input_shape=(4, None, None, None), seed=0):
    keras.utils.set_random_seed(seed)
    return unet_model_3d(soft_dice_loss, input_shape=input_shape, depth=2, n_base_filters=2)


@pytest.fixture(scope="module")
def case():
    return make_phantom(3, shape=(40, 44, 28))


def test_course_tiles(case):
    m = tiny_unet()
    probs = ev.predict_course_tiles(m, case.image, tile=(16, 16, 8), progress=False)
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
