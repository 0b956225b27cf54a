"""Tests of `bts_course.preprocess`: standardisation, whole-scan normalisation and cropping."""
import json, warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from bts_course.data import example_patches
from bts_course.phantom import make_phantom
from bts_course.sampling import BACKGROUND_THRESHOLD
from bts_course.preprocess import crop_to_brain, normalize_nonzero, standardize, uncrop_from_brain

COURSE_PATCHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "course_patches"  # shared/ sits beside the checkout
SIZE = (64, 64, 16)


def loop_standardize(image):
    "Independent float64 reference: the course's loop with the constant-slice rule fixed"
    out = np.zeros(image.shape)
    for c in range(image.shape[0]):
        for z in range(image.shape[3]):
            s = image[c, :, :, z].astype(np.float64)
            if s.max() > s.min(): out[c, :, :, z] = (s - s.mean()) / s.std()
    return out


# --- standardize ---------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(image=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4)),
                        elements=st.floats(-1e4, 1e4, width=32)),
       constant=st.data())
def test_standardize_property(image, constant):
    "Property: every channel-slice comes out with mean 0 and std 1, or all zeros if it was constant"
    c = constant.draw(st.integers(0, image.shape[0] - 1))
    z = constant.draw(st.integers(0, image.shape[3] - 1))
    image[c, :, :, z] = constant.draw(st.floats(-1e4, 1e4, width=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = standardize(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    for ci in range(image.shape[0]):
        for zi in range(image.shape[3]):
            s, o = image[ci, :, :, zi], out[ci, :, :, zi].astype(np.float64)
            if s.max() == s.min():
                assert not o.any()
            else:
                assert abs(o.mean()) < 1e-5 and abs(o.std() - 1) < 1e-5
    np.testing.assert_allclose(out, loop_standardize(image), atol=1e-4)


def test_standardize_course_reference_on_real_patch():
    X_norm = standardize(example_patches()[0].x)
    assert f"{X_norm[0, :, :, 0].std():.2f}" == "1.00"


@pytest.mark.skipif(not COURSE_PATCHES.is_dir(), reason="real course patches not available")
def test_real_course_patches_load_and_standardise():
    config = json.loads((COURSE_PATCHES / "config.json").read_text(encoding="utf-8"))
    names = config["train"] + config["valid"]
    assert len(names) == 20 and not set(config["train"]) & set(config["valid"])
    for name in names[::4]:
        with h5py.File(COURSE_PATCHES / "train" / name, "r") as f:
            x, y = f["x"][()], f["y"][()]
        assert x.shape == (4, 160, 160, 16) and y.shape == (160, 160, 16, 4)
        np.testing.assert_array_equal(y.sum(-1), 1)
        assert y[..., 0].mean() <= BACKGROUND_THRESHOLD  # the course's own patches meet its threshold
        X_norm = standardize(x)
        np.testing.assert_allclose(X_norm, loop_standardize(x), atol=1e-3)
        for c in range(4):
            for z in range(16):
                if x[c, :, :, z].max() > x[c, :, :, z].min():
                    assert abs(X_norm[c, :, :, z].std(dtype=np.float64) - 1) < 1e-4


def test_standardize_nearly_constant_slice():
    "A slice whose values differ by one float32 step still comes out with mean 0 and std 1"
    a = np.float32(1000.0)
    image = np.full((1, 8, 8, 2), a, np.float32)
    image[0, 0, 0, 0] = np.nextafter(a, np.float32(np.inf))
    out = standardize(image)
    np.testing.assert_allclose(out, loop_standardize(image), atol=1e-5)
    assert abs(out[0, 0, 0, 0] - np.sqrt(63)) < 1e-4 and not out[..., 1].any()


def test_standardize_validates():
    with pytest.raises(ValueError, match="found 3D"):
        standardize(np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="2 non-finite"):
        standardize(np.array([np.nan, np.inf, 1, 2], np.float32).reshape(1, 2, 2, 1))
    with pytest.raises(ValueError, match="empty"):
        standardize(np.ones((1, 0, 4, 4)))
    assert standardize(np.arange(16).reshape(1, 4, 4, 1)).dtype == np.float32  # integers are fine


# --- whole scans ---------------------------------------------------------------------------------

def test_normalize_nonzero():
    case = make_phantom(1, shape=(64, 64, 48))
    image = case.image.copy()
    image[..., 1] = np.where((image != 0).any(-1), 7.0, 0.0)  # a channel constant inside the brain
    out = normalize_nonzero(image)
    brain = (image != 0).any(-1)
    assert out.dtype == np.float32
    assert not out[~brain].any()
    for c in (0, 2, 3):
        v = out[brain, c].astype(np.float64)
        assert abs(v.mean()) < 1e-5 and abs(v.std() - 1) < 1e-5
        expected = (image[brain, c] - image[brain, c].mean(dtype=np.float64)) / image[brain, c].std(dtype=np.float64)
        np.testing.assert_allclose(v, expected, atol=1e-5)
    assert not out[..., 1].any()
    assert not normalize_nonzero(np.zeros((4, 4, 4, 2))).any()
    with pytest.raises(ValueError, match="found 3D"):
        normalize_nonzero(image[..., 0])
    image[3, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        normalize_nonzero(image)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_crop_uncrop_property(data):
    "Property: cropping to the brain and putting back gives the original grid, and the box is tight"
    shape = tuple(data.draw(st.integers(1, 8)) for _ in range(3))
    channels = data.draw(st.sampled_from([(), (1,), (3,)]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    image = np.where(rng.random(shape + channels) < data.draw(st.floats(0.01, 1)), rng.normal(size=shape + channels), 0)
    image[tuple(rng.integers(0, s) for s in shape + channels)] = 1.0  # at least one brain voxel
    margin = data.draw(st.integers(0, 3))
    cropped, box = crop_to_brain(image, margin=margin)
    np.testing.assert_array_equal(uncrop_from_brain(cropped, box, image.shape), image)
    assert np.count_nonzero(cropped) == np.count_nonzero(image)  # nothing of the brain is cut off
    if margin == 0:
        mask = image != 0 if not channels else (image != 0).any(-1)
        for axis, s in enumerate(box):
            first = np.take(mask, s.start, axis=axis)
            last = np.take(mask, s.stop - 1, axis=axis)
            assert first.any() and last.any()


def test_uncrop_trailing_axes_and_errors():
    image = np.zeros((10, 12, 14, 4), np.float32)
    image[2:5, 3:9, 4:6] = 1
    cropped, box = crop_to_brain(image)
    assert cropped.shape == (3, 6, 2, 4)
    probabilities = np.full((3, 6, 2, 3), 0.5, np.float32)
    back = uncrop_from_brain(probabilities, box, image.shape, fill=-1)
    assert back.shape == (10, 12, 14, 3) and back[0, 0, 0, 0] == -1 and back[2, 3, 4, 2] == 0.5
    with pytest.raises(ValueError, match="does not fit box"):
        uncrop_from_brain(probabilities[:2], box, image.shape)
    with pytest.raises(ValueError, match="all zeros"):
        crop_to_brain(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="3 slices"):
        uncrop_from_brain(cropped, box[:2], image.shape)
