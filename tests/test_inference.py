"Whole-scan inference (bts_course.inference): window planning, blending, predict_volume, and `bts predict`"
import math
from pathlib import Path

import numpy as np
import pytest
import nibabel as nib
from hypothesis import given, settings, strategies as st

from bts_course.model import model_divisor, model_io, unet_model_3d, with_input_shape  # imports TensorFlow quietly
import keras
from bts_course.phantom import make_phantom
from bts_course.data import probabilities_to_labels, save_nifti
from bts_course.metrics import soft_dice_loss
from bts_course.preprocess import brain_box, standardize
from bts_course.cli import main as bts
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


# ---------------------------------------------------------------- window planning
@given(length=st.integers(1, 300), size=st.integers(1, 200), overlap=st.floats(0, 0.9))
@settings(max_examples=300, deadline=None)
def test_axis_starts_cover_with_overlap(length, size, overlap):
    starts = inf.axis_starts(length, size, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if size >= length:
        assert starts == [0]
        return
    assert starts[-1] == length - size  # the last window ends at the end
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        assert b - a <= size * (1 - overlap) + 1  # neighbours share at least `overlap` of a window (up to rounding)
    # not more windows than needed: with one window less the step would exceed the allowed one
    if len(starts) > 2 and size * (1 - overlap) >= 1:
        assert (length - size) / (len(starts) - 2) > size * (1 - overlap) - 1e-9


def processed(shape, window, overlap):
    corners, _ = inf.window_corners(shape, window, overlap)
    return len(corners) * math.prod(window), len(corners)


@pytest.mark.parametrize("shape,max_voxels", [((37, 50, 21), 8000), ((60, 33, 45), 20000), ((20, 20, 20), 1e9),
                                              ((140, 172, 140), 2.5e6)])
def test_choose_window_is_the_cheapest_that_fits(shape, max_voxels):
    d = (4, 4, 4) if max(shape) < 100 else (8, 8, 8)
    w = inf.choose_window(shape, d, max_voxels)
    assert math.prod(w) <= max_voxels and all(s % k == 0 for s, k in zip(w, d, strict=True))
    # brute force over every window of multiples of d
    candidates = [tuple((i + 1) * k for i, k in zip(index, d, strict=True)) for index in np.ndindex(*[-(-s // k) for s, k in zip(shape, d, strict=True)])]
    best = min(processed(shape, c, 0.25)[0] for c in candidates if math.prod(c) <= max_voxels)
    assert processed(shape, w, 0.25)[0] == best


def test_choose_window_respects_min_window():
    shape = (140, 172, 140)
    w = inf.choose_window(shape, (8, 8, 8), 2.5e6, min_window=96)
    assert min(w) >= 96 and math.prod(w) <= 2.5e6
    assert processed(shape, w, 0.25)[0] >= processed(shape, inf.choose_window(shape, (8, 8, 8), 2.5e6), 0.25)[0]
    assert inf.choose_window((30, 40, 20), (4, 4, 4), 1e9, min_window=96) == (32, 40, 20)  # never beyond the crop
    with pytest.warns(UserWarning, match="thinner than the network's view"):
        w = inf.choose_window(shape, (8, 8, 8), 5e5, min_window=96)
    assert min(w) >= 48 and math.prod(w) <= 5e5


def test_window_plan_follows_the_memory_budget():
    m = unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=3, n_base_filters=4)
    crop = (120, 140, 100)
    big, _, _ = inf.plan_windows(m, crop, max_memory_gb=100)
    assert big == (120, 140, 100)  # everything in one window (divisor 4)
    small, corners, padded = inf.plan_windows(m, crop, max_memory_gb=0.05)
    assert math.prod(small) * inf.activation_bytes(m) <= 0.05e9 and len(corners) > 1 and padded == crop
    half, _, _ = inf.plan_windows(m, crop, max_memory_gb=0.1, batch_size=2)
    assert half == inf.plan_windows(m, crop, max_memory_gb=0.05)[0]


def test_plan_windows_pads_small_axes():
    corners, padded = inf.window_corners((30, 100, 10), (32, 48, 16), 0.25)
    assert padded == (32, 100, 16)
    assert sorted({c[1] for c in corners}) == [0, 26, 52]
    assert {c[0] for c in corners} == {0} and {c[2] for c in corners} == {0}


def test_gaussian_weights():
    g = inf.gaussian_weights((15, 8, 4))
    assert g.dtype == np.float32 and g.shape == (15, 8, 4)
    assert g.max() == pytest.approx(1.0, abs=0.02) and g.min() >= 1e-3
    np.testing.assert_allclose(g, g[::-1, ::-1, ::-1], atol=1e-7)
    assert g[7, 3, 1] > g[0, 3, 1]
    assert (inf.gaussian_weights((4, 4, 4), sigma_scale=None) == 1).all()
    with pytest.raises(ValueError, match="positive"):
        inf.gaussian_weights((4, 4, 4), sigma_scale=0)


# ---------------------------------------------------------------- labels
def test_probabilities_to_labels_priority_and_modes():
    p = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.6], [0.2, 0.7, 0.55], [0.3, 0.45, 0.1], [0.5, 0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(probabilities_to_labels(p), [1, 3, 3, 0, 0])
    np.testing.assert_array_equal(probabilities_to_labels(p, mode="argmax"), [1, 1, 2, 0, 0])
    np.testing.assert_array_equal(probabilities_to_labels(p, threshold=0.25), [1, 3, 3, 2, 3])
    np.testing.assert_array_equal(probabilities_to_labels(p.T, axis=0), [1, 3, 3, 0, 0])
    four = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(probabilities_to_labels(four, mode="argmax"), [0, 3])
    assert probabilities_to_labels(p).dtype == np.uint8
    with pytest.raises(ValueError, match="found 2"):
        probabilities_to_labels(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mode"):
        probabilities_to_labels(p, mode="vote")


# ---------------------------------------------------------------- predict_volume
def test_model_introspection():
    m = unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=3, n_base_filters=2)
    assert model_io(m) == (4, 3)
    assert model_divisor(m) == (4, 4, 4)
    assert model_divisor(pointwise_model()) == (1, 1, 1)
    assert inf.activation_bytes(pointwise_model()) == 4 * (4 + 4 + 3)  # during the conv: its input, its copy, its output


def test_normalize_crop_background_matches_standardize(case):
    crop = case.image[brain_box(case.image)]
    norm, background = inf.normalize_crop(crop)
    np.testing.assert_array_equal(norm, standardize(np.moveaxis(crop, -1, 0)))
    zero = np.argwhere((crop == 0).all(-1))[0]
    np.testing.assert_allclose(norm[(slice(None),) + tuple(zero)], background[:, 0, 0, zero[2]], atol=1e-5)
    n2, b2 = inf.normalize_crop(crop, "none")
    np.testing.assert_array_equal(n2, np.moveaxis(crop, -1, 0))
    assert not b2.any()
    with pytest.raises(ValueError, match="normalization"):
        inf.normalize_crop(crop, "zscore")


@pytest.mark.parametrize("window,overlap,batch", [((8, 8, 8), 0.25, 1), ((16, 12, 4), 0.5, 4), ((40, 48, 28), 0.0, 2),
                                                  ((3, 5, 7), 0.3, 3)])
def test_stitching_is_exact_for_a_pointwise_model(case, window, overlap, batch):
    m = pointwise_model()
    one = inf.predict_volume(m, case.image, progress=False)
    many = inf.predict_volume(m, case.image, window=window, overlap=overlap, batch_size=batch, progress=False)
    np.testing.assert_allclose(many, one, atol=1e-5)
    # and the one-window answer is the model applied to the standardised crop, zero outside the box
    box = brain_box(case.image)
    norm, _ = inf.normalize_crop(case.image[box])
    direct = m.predict_on_batch(norm[None])[0]
    np.testing.assert_allclose(one[box], np.moveaxis(direct, 0, -1), atol=1e-5)
    outside = np.ones(one.shape[:3], bool)
    outside[box] = False
    assert one.dtype == np.float32 and one[outside].max() == 0


def test_unet_one_window_equals_direct_call_and_weights_are_shared(case):
    m = tiny_unet((4, 16, 16, 16))  # a fixed input size: predict_volume runs it on other sizes
    box = brain_box(case.image)
    probs = inf.predict_volume(m, case.image, progress=False)
    norm, background = inf.normalize_crop(case.image[box])
    crop = norm.shape[1:]
    window = tuple(-(-s // 2) * 2 for s in crop)  # divisor 2, one window
    grid = np.zeros((4,) + window, np.float32)
    off = [(w - s) // 2 for w, s in zip(window, crop, strict=True)]
    inner = tuple(slice(o, o + s) for o, s in zip(off, crop, strict=True))
    grid[:, :, :, inner[2]] = background
    grid[(slice(None),) + inner] = norm
    direct = with_input_shape(m).predict_on_batch(grid[None])[0][(slice(None),) + inner]
    np.testing.assert_allclose(probs[box], np.moveaxis(direct, 0, -1), atol=1e-5)
    # training the original model changes what predict_volume uses (the clone shares the weights)
    m.set_weights([w * 0 for w in m.get_weights()])
    np.testing.assert_allclose(inf.predict_volume(m, case.image, progress=False)[box], 0.5, atol=1e-6)


def test_small_windows_stay_close_to_one_window(case):
    m = tiny_unet()
    one = inf.predict_volume(m, case.image, progress=False)
    tiles = inf.predict_volume(m, case.image, window=(16, 16, 8), overlap=0.5, batch_size=3, progress=False)
    assert np.abs(tiles - one).mean() < 0.02


def test_predict_volume_errors(case):
    m = tiny_unet()
    with pytest.raises(ValueError, match="expected an image"):
        inf.predict_volume(m, case.image[..., :3], progress=False)
    bad = case.image.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        inf.predict_volume(m, bad, progress=False)
    with pytest.raises(ValueError, match="multiple of the model's divisor"):
        inf.predict_volume(m, case.image, window=(15, 16, 16), progress=False)
    with pytest.raises(ValueError, match="exceeds the memory budget"):
        inf.predict_volume(m, case.image, max_memory_gb=1e-9, progress=False)
    with pytest.warns(UserWarning, match="all zeros"):
        zeros = inf.predict_volume(m, np.zeros((8, 8, 8, 4), np.float32), progress=False)
    assert zeros.shape == (8, 8, 8, 3) and not zeros.any()


def write_msd(root: Path, seeds, shape=(32, 32, 24)):
    for seed in seeds:
        c = make_phantom(seed, shape)
        save_nifti(c.image, root / "imagesTr" / f"BRATS_{seed:03d}.nii.gz", c.affine)
        save_nifti(c.label, root / "labelsTr" / f"BRATS_{seed:03d}.nii.gz", c.affine)


# ---------------------------------------------------------------- bts predict
@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    tiny_unet().save(d / "unet.keras")
    pointwise_model(channels=2).save(d / "two.keras")
    pointwise_model(n_labels=5).save(d / "five.keras")
    (d / "junk.keras").write_bytes(b"PK\x03\x04 not really a zip")
    return d


def test_bts_predict_one_msd_case_keeps_affine_and_header(tmp_path, saved_models, capsys):
    c = make_phantom(7, (32, 32, 24))
    affine = np.array([[-1.2, 0.1, 0, 90], [0.05, 1.2, 0, -120], [0, 0, 2.0, -60], [0, 0, 0, 1]])
    img = tmp_path / "imagesTr" / "BRATS_007.nii.gz"
    save_nifti(c.image, img, affine)
    assert bts(["predict", str(img), "-o", str(tmp_path / "pred.nii.gz"), "--model", str(saved_models / "unet.keras")]) == 0
    assert "pred.nii.gz" in capsys.readouterr().out
    out, src = nib.load(tmp_path / "pred.nii.gz"), nib.load(img)
    assert out.shape == (32, 32, 24) and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    assert out.header.get_sform(coded=True)[1] == src.header.get_sform(coded=True)[1]
    assert out.header.get_qform(coded=True)[1] == src.header.get_qform(coded=True)[1]
    np.testing.assert_allclose(out.header.get_zooms(), src.header.get_zooms()[:3])
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    model = inf.load_model(saved_models / "unet.keras")
    np.testing.assert_array_equal(labels, probabilities_to_labels(inf.predict_volume(model, c.image, progress=False)))


def test_bts_predict_folder_of_cases_and_brats_layout(tmp_path, saved_models):
    write_msd(tmp_path / "msd", (1, 2))
    c = make_phantom(4, (32, 32, 24))
    folder = tmp_path / "brats" / "BraTS2021_00004"
    for i, suffix in enumerate(("flair", "t1", "t1ce", "t2")):
        save_nifti(c.image[..., i], folder / f"BraTS2021_00004_{suffix}.nii.gz", c.affine)
    model = str(saved_models / "unet.keras")
    assert bts(["predict", str(tmp_path / "msd"), "-o", str(tmp_path / "out"), "--model", model]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["BRATS_001.nii.gz", "BRATS_002.nii.gz"]
    assert bts(["predict", str(folder), "-o", str(tmp_path / "b"), "--model", model, "--mode", "argmax",
                "--window", "16", "16", "8", "--batch-size", "2"]) == 0
    assert nib.load(tmp_path / "b" / "BraTS2021_00004.nii.gz").shape == (32, 32, 24)
    assert bts(["predict", str(tmp_path / "brats"), "-o", str(tmp_path / "c"), "--model", model]) == 0
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["BraTS2021_00004.nii.gz"]


@pytest.mark.parametrize("model,message", [("two.keras", "takes 2 input channels"), ("five.keras", "gives 5 outputs"),
                                           ("junk.keras", "not a Keras model file"), ("missing.keras", "no such model file")])
def test_bts_predict_refuses_bad_models(tmp_path, saved_models, capsys, model, message):
    write_msd(tmp_path / "msd", (1,))
    code = bts(["predict", str(tmp_path / "msd"), "-o", str(tmp_path / "out"), "--model", str(saved_models / model)])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bts_predict_usage_errors(tmp_path, saved_models, capsys):
    assert bts(["predict", str(tmp_path / "nothing"), "-o", str(tmp_path / "o"), "--model", str(saved_models / "unet.keras")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert bts(["predict", str(tmp_path)]) == 2
    assert "required" in capsys.readouterr().err
