"""Tests of `bts_course.sampling`: the course's `get_sub_volume` and the exact sampler."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import bts_course.sampling as sampling
from bts_course.phantom import make_phantom
from bts_course.sampling import (SamplingError, get_sub_volume, sample_patch, sample_patches, summed_volume_table, valid_corners, window_sums)


def brute_counts(mask, size):
    "Number of nonzero voxels of `mask` in the patch at every corner, counted one patch at a time"
    p, q, r = size
    X, Y, Z = mask.shape
    out = np.zeros((X - p + 1, Y - q + 1, Z - r + 1), int)
    for a in range(out.shape[0]):
        for b in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[a, b, c] = np.count_nonzero(mask[a:a + p, b:b + q, c:c + r])
    return out


def coordinate_image(shape):
    "Image whose channels hold the x, y and z index of each voxel, so a patch tells where it came from"
    return np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(0, shape=(96, 96, 64))


# --- get_sub_volume -------------------------------------------------------------------------------

def course_reference_inputs():
    image, label = np.zeros((4, 4, 3, 1)), np.zeros((4, 4, 3))
    for i in range(4):
        for j in range(4):
            for k in range(3):
                image[i, j, k, 0] = i * j * k
                label[i, j, k] = k
    return image, label


def test_get_sub_volume_course_reference():
    image, label = course_reference_inputs()
    np.random.seed(3)
    X, y = get_sub_volume(image, label, 4, 4, 3, 2, 2, 2, num_classes=3)
    np.testing.assert_array_equal(X[0, :, :, 0], [[0, 2], [0, 3]])
    np.testing.assert_array_equal(X[0, :, :, 1], [[0, 4], [0, 6]])
    np.testing.assert_array_equal(y[0, :, :, 0], np.ones((2, 2)))
    np.testing.assert_array_equal(y[0, :, :, 1], np.zeros((2, 2)))
    np.testing.assert_array_equal(y[1, :, :, 0], np.zeros((2, 2)))
    np.testing.assert_array_equal(y[1, :, :, 1], np.ones((2, 2)))
    assert X.dtype == np.float32 and y.dtype == np.float32 and y.shape == (2, 2, 2, 2)


def test_get_sub_volume_draw_order_is_the_courses():
    "Corners come from np.random.randint over each axis, in the order x, y, z, with rejections in between"
    label = np.zeros((20, 30, 40), np.uint8)
    label[:, :, 30:] = 1  # only patches reaching z >= 30 can be accepted
    image = coordinate_image(label.shape)
    np.random.seed(7)
    X, y = get_sub_volume(image, label, 20, 30, 40, 4, 5, 6, num_classes=2, background_threshold=0.5)
    np.random.seed(7)
    while True:
        corner = (np.random.randint(0, 17), np.random.randint(0, 26), np.random.randint(0, 35))
        if np.count_nonzero(label[corner[0]:corner[0] + 4, corner[1]:corner[1] + 5, corner[2]:corner[2] + 6]) >= 60:
            break
    np.testing.assert_array_equal(X[:, 0, 0, 0], corner)


def test_get_sub_volume_draws_each_axis_over_its_own_range():
    "The course's defect drew y and z from the x sizes; here z reaches its whole range and never overruns"
    label = np.ones((10, 10, 60), np.uint8)
    image = coordinate_image(label.shape)
    np.random.seed(0)
    z_corners = [int(get_sub_volume(image, label, 10, 10, 60, 8, 8, 4, num_classes=2)[0][2, 0, 0, 0]) for _ in range(400)]
    assert max(z_corners) > 10 - 8  # beyond what the x range would allow
    assert 0 <= min(z_corners) and max(z_corners) <= 60 - 4
    assert len(set(z_corners)) > 40


def test_get_sub_volume_one_hots_only_the_accepted_patch(monkeypatch):
    label = np.zeros((30, 30, 30), np.uint8)
    label[25:, 25:, 25:] = 1
    calls = []
    original = sampling._extract
    monkeypatch.setattr(sampling, "_extract", lambda *a: calls.append(1) or original(*a))
    np.random.seed(0)
    *_, tries = sampling.rejection_sample(np.zeros((30, 30, 30, 1)), label, patch_size=(6, 6, 6), background_threshold=0.9,
                                          max_tries=10_000, num_classes=2)
    assert tries > 1 and len(calls) == 1


def test_rejection_sample_says_where_and_after_how_many_tries():
    "The corner is where the patch starts in the scan, and `tries` counts the draws, rejected ones included"
    label = np.zeros((20, 30, 40), np.uint8)
    label[:, :, 30:] = 1
    image = coordinate_image(label.shape)
    np.random.seed(7)
    X, y, corner, tries = sampling.rejection_sample(image, label, patch_size=(4, 5, 6), background_threshold=0.5, num_classes=2)
    np.testing.assert_array_equal(X[:, 0, 0, 0], corner)
    np.random.seed(7)
    draws = [(np.random.randint(0, 17), np.random.randint(0, 26), np.random.randint(0, 35)) for _ in range(tries)]
    assert draws[-1] == corner and all(c[2] + 6 <= 30 + 2 for c in draws[:-1])  # each rejected one reaches < 3 slices into z >= 30
    np.random.seed(7)
    np.testing.assert_array_equal(get_sub_volume(image, label, 20, 30, 40, 4, 5, 6, num_classes=2, background_threshold=0.5)[0], X)


@pytest.mark.parametrize("kwargs, message", [
    (dict(patch_size=(5, 2, 2)), "does not fit"),
    (dict(patch_size=(2, 2)), "output_x, output_y, output_z"),
    (dict(max_tries=0), "max_tries"),
    (dict(background_threshold=-0.1), r"\[0, 1\]"),
    (dict(num_classes=2), "0..1"),
])
def test_rejection_sample_validates(kwargs, message):
    image, label = course_reference_inputs()
    with pytest.raises(ValueError, match=message):
        sampling.rejection_sample(image, label, **(dict(patch_size=(2, 2, 2), num_classes=3) | kwargs))


def test_get_sub_volume_raises_after_max_tries():
    image, _ = course_reference_inputs()
    with pytest.raises(SamplingError, match="in 20 random tries"):
        get_sub_volume(image, np.zeros((4, 4, 3)), 4, 4, 3, 2, 2, 2, num_classes=3, max_tries=20)


@pytest.mark.parametrize("kwargs, message", [
    (dict(orig_x=5), "orig_x, orig_y, orig_z"),
    (dict(output_z=4), "does not fit"),
    (dict(num_classes=2), "0..1"),
    (dict(max_tries=0), "max_tries"),
    (dict(background_threshold=1.5), r"\[0, 1\]"),
])
def test_get_sub_volume_validates(kwargs, message):
    image, label = course_reference_inputs()
    args = dict(orig_x=4, orig_y=4, orig_z=3, output_x=2, output_y=2, output_z=2, num_classes=3) | kwargs
    with pytest.raises(ValueError, match=message):
        get_sub_volume(image, label, **args)


def test_get_sub_volume_refuses_nonfinite_and_wrong_rank():
    image, label = course_reference_inputs()
    image[1, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="1 non-finite"):
        get_sub_volume(image, label, 4, 4, 3, 2, 2, 2, num_classes=3)
    with pytest.raises(ValueError, match="must be 4D"):
        get_sub_volume(image[..., 0], label, 4, 4, 3, 2, 2, 2, num_classes=3)
    with pytest.raises(ValueError, match="integer codes"):
        get_sub_volume(np.zeros((4, 4, 3, 1)), label + 0.5, 4, 4, 3, 2, 2, 2, num_classes=3)


# --- summed-volume table ----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_window_sums_match_brute_force(data):
    shape = tuple(data.draw(st.integers(1, 7)) for _ in range(3))
    size = tuple(data.draw(st.integers(1, s)) for s in shape)
    seed = data.draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random(shape) < data.draw(st.floats(0, 1))
    table = summed_volume_table(mask)
    assert table.shape == tuple(s + 1 for s in shape) and table.dtype == np.int32
    np.testing.assert_array_equal(window_sums(table, size), brute_counts(mask, size))


def test_summed_volume_table_does_not_wrap_around():
    assert summed_volume_table(np.ones((256, 2, 2), np.uint8))[-1, -1, -1] == 1024


# --- exact sampler ---------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sampler_never_exceeds_threshold_and_stays_inside(data):
    "Property: every patch meets the threshold and lies in the volume; an error only when no corner qualifies"
    shape = tuple(data.draw(st.integers(1, 9)) for _ in range(3))
    size = tuple(data.draw(st.integers(1, s)) for s in shape)
    threshold = data.draw(st.floats(0, 1))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    label = np.where(rng.random(shape) < data.draw(st.floats(0, 1)), rng.integers(1, 4, shape), 0).astype(np.uint8)
    image = coordinate_image(shape)
    n_voxels = int(np.prod(size))
    counts = brute_counts(label, size)
    possible = (n_voxels - counts) <= threshold * n_voxels + 1e-9
    if not possible.any():
        with pytest.raises(SamplingError, match="best achievable"):
            sample_patches(image, label, 3, size, threshold, rng=seed)
        return
    patches = sample_patches(image, label, 5, size, threshold, rng=seed)
    assert len(patches) == 5
    for X, y, corner in patches:
        assert X.shape == (3,) + size and y.shape == (3,) + size
        assert all(0 <= c <= s - p for c, s, p in zip(corner, shape, size, strict=True))
        np.testing.assert_array_equal(X[:, 0, 0, 0], corner)
        assert 1 - y.sum() / n_voxels <= threshold + 1e-9
        assert possible[corner]


def test_sampler_error_states_best_fraction():
    label = np.zeros((20, 20, 20), np.uint8)
    label[:2, :2, :2] = 1  # 8 tumour voxels: best patch of 1000 voxels is 99.2 % background
    with pytest.raises(SamplingError, match=r"99\.20%"):
        sample_patch(np.zeros((20, 20, 20, 4)), label, (10, 10, 10))


def test_sampler_finds_a_single_valid_corner():
    "Rejection would need ~4000 tries on average here; the exact sampler finds the one corner at once"
    label = np.zeros((20, 20, 20), np.uint8)
    label[:5, :5, :5] = 1
    ok = valid_corners(label, (5, 5, 5), background_threshold=0.0)
    assert ok.sum() == 1
    for _, y, corner in sample_patches(np.zeros((20, 20, 20, 1)), label, 10, (5, 5, 5), 0.0, rng=0):
        assert corner == (0, 0, 0) and y.sum() == 125


def test_sampler_draws_uniformly_over_valid_corners():
    from scipy.stats import chisquare
    rng = np.random.default_rng(1)
    label = (rng.random((10, 9, 8)) < 0.2).astype(np.uint8)
    ok = valid_corners(label, (4, 4, 4), 0.8)
    assert 0 < ok.sum() < ok.size
    corners = [c for *_, c in sample_patches(np.zeros((10, 9, 8, 1)), label, 20_000, (4, 4, 4), 0.8, rng=3)]
    counts = np.zeros(ok.shape, int)
    np.add.at(counts, tuple(np.array(corners).T), 1)
    assert counts[~ok].sum() == 0
    assert chisquare(counts[ok]).pvalue > 1e-3


def test_sampler_rng_forms(phantom):
    a = [c for *_, c in sample_patches(phantom.image, phantom.label, 4, (64, 64, 16), rng=5)]
    b = [c for *_, c in sample_patches(phantom.image, phantom.label, 4, (64, 64, 16), rng=np.random.default_rng(5))]
    c = [c for *_, c in sample_patches(phantom.image, phantom.label, 4, (64, 64, 16), rng=6)]
    assert a == b and a != c
    assert len(sample_patches(phantom.image, phantom.label, 2, (64, 64, 16), rng=None)) == 2


def test_sampler_patch_content(phantom):
    X, y, (cx, cy, cz) = sample_patch(phantom.image, phantom.label, (64, 64, 16), rng=0)
    box = (slice(cx, cx + 64), slice(cy, cy + 64), slice(cz, cz + 16))
    np.testing.assert_array_equal(X, np.moveaxis(phantom.image[box], -1, 0))
    assert X.flags.c_contiguous and X.dtype == np.float32
    np.testing.assert_array_equal((y * np.arange(1, 4)[:, None, None, None]).sum(0), phantom.label[box])


def test_min_class_fraction(phantom):
    for _, y, _ in sample_patches(phantom.image, phantom.label, 10, (64, 64, 16), rng=0, min_class_fraction={3: 0.01}):
        assert y[2].mean() >= 0.01
    with pytest.raises(SamplingError, match="largest share of class 3"):
        sample_patch(phantom.image, phantom.label, (64, 64, 16), min_class_fraction={3: 0.9})
    with pytest.raises(ValueError, match="class 7"):
        sample_patch(phantom.image, phantom.label, (64, 64, 16), min_class_fraction={7: 0.1})


def test_padding_for_small_volumes(phantom):
    z = int(np.argmax((phantom.label > 0).sum((0, 1)))) - 5  # 10 slices through the middle of the tumour
    image, label = phantom.image[:, :, z:z + 10], phantom.label[:, :, z:z + 10]
    with pytest.raises(ValueError, match=r"z \(10 < 16\).*pad=True"):
        sample_patch(image, label, (64, 64, 16))
    X, y, corner = sample_patch(image, label, (64, 64, 16), rng=0, pad=True)
    assert X.shape == (4, 64, 64, 16) and corner[2] == -3  # 6 slices of padding: 3 before, 3 after
    np.testing.assert_array_equal(X[..., :3], 0)
    np.testing.assert_array_equal(X[..., 13:], 0)
    np.testing.assert_array_equal(X[..., 3:13], np.moveaxis(image[corner[0]:corner[0] + 64, corner[1]:corner[1] + 64], -1, 0))


@pytest.mark.parametrize("call, message", [
    (lambda i, l: sample_patch(i[..., 0], l, (4, 4, 4)), "must be 4D"),
    (lambda i, l: sample_patch(i, l[None], (4, 4, 4)), "must be 3D"),
    (lambda i, l: sample_patch(i[:5], l, (4, 4, 4)), "differs from label shape"),
    (lambda i, l: sample_patch(np.where(l[..., None] > 0, np.nan, i), l, (4, 4, 4)), "non-finite"),
    (lambda i, l: sample_patch(i, l + 4, (4, 4, 4)), r"0\.\.3"),
    (lambda i, l: sample_patch(i, l, (4, 4)), "3 positive integers"),
    (lambda i, l: sample_patch(i, l, (4, 0, 4)), "3 positive integers"),
    (lambda i, l: sample_patch(i, l, (4, 4, 4), background_threshold=-0.1), r"\[0, 1\]"),
    (lambda i, l: sample_patches(i, l, -1, (4, 4, 4)), "n must be"),
])
def test_sampler_validates(call, message):
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    with pytest.raises(ValueError, match=message):
        call(np.ones((8, 8, 8, 2), np.float32), label)


def test_sampler_accepts_bool_and_float_labels():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    image = np.ones((8, 8, 8, 1))
    for label in (mask, mask.astype(np.float64)):
        _, y, _ = sample_patch(image, label, (4, 4, 4), 0.5, rng=0, num_classes=2)
        assert y.shape == (1, 4, 4, 4) and y.mean() >= 0.5


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_padded_patches_match_the_volume(data):
    "Property: with pad=True a patch holds the volume where it overlaps it and zeros elsewhere, at the reported corner"
    shape = tuple(data.draw(st.integers(1, 6)) for _ in range(3))
    size = tuple(data.draw(st.integers(1, 8)) for _ in range(3))
    image = coordinate_image(shape) + 1  # nonzero everywhere in the volume
    X, y, corner = sample_patch(image, np.ones(shape, np.uint8), size, 1.0, rng=data.draw(st.integers(0, 99)), pad=True)
    for c, d, s in zip(corner, shape, size, strict=True):
        assert (0 <= c <= d - s) if d >= s else c == -((s - d) // 2)
    index = [np.arange(c, c + s) for c, s in zip(corner, size, strict=True)]
    ix, iy, iz = [(i >= 0) & (i < d) for i, d in zip(index, shape, strict=True)]
    mask = ix[:, None, None] & iy[None, :, None] & iz[None, None, :]
    grid = np.meshgrid(*index, indexing="ij")
    expected = np.stack([np.where(mask, g + 1, 0) for g in grid]).astype(np.float32)
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y[0], mask)
