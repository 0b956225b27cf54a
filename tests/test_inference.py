"Whole-scan inference (bts_course.inference): window planning (priced by bts_course.costs, tested in test_costs.py), blending, flips, predict_volume, `bts predict`"
import math
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import nibabel as nib
from hypothesis import given, settings, strategies as st

from bts_course.model import model_divisor, model_io, receptive_field, unet_model_3d, with_input_shape  # imports TensorFlow quietly
from bts_course.phantom import make_phantom
from bts_course.data import save_nifti
from bts_course.labels import probabilities_to_labels
from bts_course.metrics import soft_dice_loss
from bts_course.preprocess import brain_box, slice_statistics, standardize
from bts_course.cli import main as bts
from bts_course import costs, inference as inf



from stand_ins import pointwise_model, tiny_unet


@pytest.fixture(scope="module")
def case():
    return make_phantom(3, shape=(40, 44, 28))


# ---------------------------------------------------------------- window planning
@given(length=st.integers(1, 300), size=st.integers(1, 200), overlap=st.integers(0, 60), step=st.sampled_from([1, 4, 8]))
@settings(max_examples=300, deadline=None)
def test_axis_starts_cover_with_overlap_on_the_pooling_grid(length, size, overlap, step):
    length = -(-length // step) * step  # the padded box: a multiple of the divisor
    if size < length and (size - overlap) // step * step < step:
        with pytest.raises(ValueError, match="cannot share"):
            inf.axis_starts(length, size, overlap, step)
        return
    starts = inf.axis_starts(length, size, overlap, step)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if size >= length:
        assert starts == [0]
        return
    assert starts[-1] == length - size  # the last window ends at the end
    assert all(s % step == 0 for s in starts[:-1])  # on the pooling grid
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        assert a + size - b >= overlap  # neighbours share at least `overlap`
    # the fewest windows: one less could not cover the axis with steps of at most the longest allowed one
    longest = (size - overlap) // step * step
    assert (len(starts) - 2) * longest < length - size
    # spread evenly: steps differ by at most one grid step (the last one may be shorter when length - size is off the grid)
    steps = np.diff(starts[:-1]) if (length - size) % step else np.diff(starts)
    if len(steps): assert steps.max() - steps.min() <= step


def processed(shape, window, overlap, divisor):
    padded = [-(-s // d) * d for s, d in zip(shape, divisor, strict=True)]
    counts = [len(inf.axis_starts(p, w, overlap, d)) for p, w, d in zip(padded, window, divisor, strict=True)]
    return math.prod(counts) * math.prod(window)


def feasible(padded, w, overlap, d):
    return w >= padded or (w - overlap) // d * d >= d


@pytest.mark.parametrize("shape,max_voxels,overlap", [((37, 50, 21), 8000, 2), ((60, 33, 45), 20000, 5),
                                                      ((20, 20, 20), 1e9, 3), ((140, 172, 140), 1.6e6, 12)])
def test_choose_window_is_the_cheapest_that_fits(shape, max_voxels, overlap):
    d = (4, 4, 4) if max(shape) < 100 else (8, 8, 8)
    w = inf.choose_window(shape, d, max_voxels, overlap_voxels=overlap)
    assert math.prod(w) <= max_voxels and all(s % k == 0 for s, k in zip(w, d, strict=True))
    # brute force over every window of multiples of d that can keep the overlap
    padded = [-(-s // k) * k for s, k in zip(shape, d, strict=True)]
    sides = [[v for v in range(k, p + 1, k) if feasible(p, v, overlap, k)] for p, k in zip(padded, d, strict=True)]
    best = min(processed(shape, c, overlap, d) for c in product(*sides) if math.prod(c) <= max_voxels)
    assert processed(shape, w, overlap, d) == best


def test_choose_window_splits_evenly_and_respects_min_window():
    # 200 voxels in two windows sharing at least 8: 104 each, not a fixed 128 plus a leftover window
    assert inf.choose_window((24, 200, 24), (8, 8, 8), 24 * 24 * 110, overlap_voxels=8) == (24, 104, 24)
    shape = (140, 172, 140)
    w = inf.choose_window(shape, (8, 8, 8), 1.6e6, overlap_voxels=12, min_window=96)
    assert min(w) >= 96 and math.prod(w) <= 1.6e6
    assert inf.choose_window((30, 40, 20), (4, 4, 4), 1e9, min_window=96) == (32, 40, 20)  # never beyond the box
    with pytest.warns(UserWarning, match="thinner than the network's halo"):
        w = inf.choose_window(shape, (8, 8, 8), 2e5, overlap_voxels=12, min_window=96)
    assert min(w) < 96 and math.prod(w) <= 2e5


def course_unet():
    return unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None))


def voxel_cost(model, per_pass=0.0):
    "A cost model in which every voxel costs the same (the plan of fewest voxels), plus `per_pass` seconds a pass: no timing"
    return costs.ForwardCost(costs.conv_layers(model), per_pass=per_pass, per_gflop=1.0)


def test_window_plan_follows_the_memory_budget():
    m = unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=3, n_base_filters=4)
    crop = (120, 140, 100)
    big = inf.plan_windows(m, crop, max_memory_gb=100, cost=voxel_cost(m))
    assert (big.window, big.n_windows, big.cost) == ((120, 140, 100), 1, 1.0)  # everything in one window (divisor 4)
    small = inf.plan_windows(m, crop, max_memory_gb=0.3, batch_size=1, cost=voxel_cost(m))
    assert small.n_windows > 1 and small.padded == crop and small.needed_gb <= 0.3 and small.budget_from == "max_memory_gb"
    # the estimate: activations with the allocator's slack, the padded input, sums and weights, the returned probabilities
    expect = 1.3 * costs.activation_bytes(m) * math.prod(small.window) + 4 * (4 + 3 + 1) * math.prod(crop) + 4 * 3 * math.prod(crop)
    assert small.needed_gb == pytest.approx(expect / 1e9)
    in_scan = inf.plan_windows(m, crop, window=small.window, max_memory_gb=0.3, batch_size=1, scan_shape=(240, 240, 155),
                               cost=voxel_cost(m))
    assert in_scan.needed_gb == pytest.approx(small.needed_gb + 4 * 3 * (240 * 240 * 155 - math.prod(crop)) / 1e9)
    # the overlap is a fraction of the halo (half the receptive field, 22 for depth 3), on the pooling grid
    assert small.overlap_voxels == (0.25 * 22,) * 3
    for starts, w in zip(small.starts, small.window, strict=True):
        assert all(s % 4 == 0 for s in starts) and all(a + w - b >= 5.5 for a, b in zip(starts, starts[1:], strict=False))
    assert small.corners == list(product(*small.starts)) and len(small.corners) == small.n_windows
    assert small.voxels == small.n_windows * math.prod(small.window) and small.cost == small.voxels / math.prod(crop)
    two = inf.plan_windows(m, crop, max_memory_gb=0.6, batch_size=2, cost=voxel_cost(m))
    batch = 2 * 1.3 * costs.activation_bytes(m) * math.prod(two.window) + 4 * (4 + 3 + 1 + 3) * math.prod(crop)
    assert two.needed_gb == pytest.approx(batch / 1e9) and two.needed_gb <= 0.6  # a batch of two windows fits


def test_plan_for_the_largest_brats_box_at_4_gb():
    m = course_unet()
    plan = inf.plan_windows(m, (160, 200, 160), max_memory_gb=4, cost=voxel_cost(m))
    assert plan.n_windows == 4 and plan.needed_gb <= 4 and plan.cost < 1.25
    text = str(plan)
    assert repr(plan) == text
    assert "4 windows of 88×200×88" in text and "of a 4 GB budget (max_memory_gb)" in text and "1.21× one pass" in text


def test_default_budget_comes_from_the_machine(monkeypatch):
    monkeypatch.setattr(costs, "_available_bytes", lambda: 10e9)
    assert costs.default_memory_gb() == pytest.approx(7.5)
    plan = inf.plan_windows(tiny_unet(), (30, 30, 20))
    assert plan.budget_gb == pytest.approx(7.5) and plan.budget_from == "the machine"
    monkeypatch.setattr(costs, "_available_bytes", lambda: 100e9)
    assert costs.default_memory_gb() == 16.0  # capped
    assert inf.plan_windows(tiny_unet(), (30, 30, 20), max_memory_gb=2).budget_gb == 2  # overridden


def test_budget_too_small_names_one_that_works():
    m = course_unet()
    with pytest.raises(ValueError, match=r"too small.*give max_memory_gb=(\d|\.)+ or more") as e:
        inf.plan_windows(m, (160, 200, 160), max_memory_gb=0.05, cost=voxel_cost(m))
    enough = float(str(e.value).split("max_memory_gb=")[1].split()[0])
    with pytest.warns(UserWarning, match="thinner"):
        assert inf.plan_windows(m, (160, 200, 160), max_memory_gb=enough, cost=voxel_cost(m)).needed_gb <= enough
    with pytest.raises(ValueError, match="must be positive"):
        inf.plan_windows(m, (16, 16, 16), max_memory_gb=-1, cost=voxel_cost(m))
    with pytest.raises(ValueError, match="batch_size"):
        inf.plan_windows(m, (16, 16, 16), batch_size=0, cost=voxel_cost(m))
    with pytest.raises(ValueError, match="overlap"):
        inf.plan_windows(m, (16, 16, 16), overlap=-0.1, cost=voxel_cost(m))


def test_plan_windows_pads_to_a_large_window():
    plan = inf.plan_windows(tiny_unet(), (30, 100, 10), window=(32, 48, 16), overlap=0.25)
    assert plan.padded == (32, 100, 16)
    assert plan.starts[0] == (0,) and plan.starts[2] == (0,)
    assert plan.starts[1][0] == 0 and plan.starts[1][-1] == 100 - 48 and len(plan.starts[1]) == 3


def test_gaussian_weights():
    g = inf.gaussian_weights((15, 8, 4))
    assert g.dtype == np.float32 and g.shape == (15, 8, 4)
    assert g.max() == pytest.approx(1.0, abs=0.02) and g.min() >= 1e-6
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
    assert costs.activation_bytes(pointwise_model()) == 4 * (4 + 4 + 3)  # during the conv: its input, its copy, its output


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
    with pytest.raises(ValueError, match="too small.*give max_memory_gb="):
        inf.predict_volume(m, case.image, max_memory_gb=1e-9, progress=False)


def test_an_empty_scan_is_background_without_a_forward_pass(monkeypatch):
    def no_network(*args, **kwargs): raise AssertionError("the network ran on an empty scan")
    monkeypatch.setattr(inf, "with_input_shape", no_network)
    monkeypatch.setattr(inf, "_plan_windows", no_network)
    with pytest.warns(UserWarning, match="all zeros"):
        zeros = inf.predict_volume(tiny_unet(), np.zeros((240, 240, 155, 4), np.float32), progress=False)
    assert zeros.shape == (240, 240, 155, 3) and zeros.dtype == np.float32 and not zeros.any()


def test_a_brain_that_fills_the_scan_or_a_scan_smaller_than_a_window(case):
    m = pointwise_model()
    full = case.image[brain_box(case.image)] + 1  # no zero anywhere: the brain box is the whole scan, padded beyond it
    probs = inf.predict_volume(m, full, window=(8, 8, 8), overlap=0, progress=False)
    direct = m.predict_on_batch(inf.normalize_crop(full)[0][None])[0]
    np.testing.assert_allclose(probs, np.moveaxis(direct, 0, -1), atol=1e-5)
    u = tiny_unet()  # divisor 2: a 3x5x1 scan is padded to 4x6x2
    tiny = inf.predict_volume(u, case.image[20:23, 20:25, 14:15] + 1, progress=False)
    assert tiny.shape == (3, 5, 1, 3) and np.isfinite(tiny).all() and (tiny > 0).all()


def test_progress_line_states_the_plan_and_budget(case, monkeypatch, capsys):
    monkeypatch.setattr(costs, "_available_bytes", lambda: 8e9)
    inf.predict_volume(tiny_unet(), case.image, progress=True)
    err = capsys.readouterr().err
    assert "predict: 1 × " in err and "budget 6.0 GB (the machine)" in err


def test_unet_windows_agree_with_one_pass():
    m = tiny_unet()
    c = make_phantom(5, shape=(64, 64, 48))
    one = inf.predict_volume(m, c.image, progress=False)
    box = tuple(s.stop - s.start for s in brain_box(c.image))
    gb = inf.plan_windows(m, box, window=(24, 24, 24), batch_size=1, scan_shape=c.image.shape[:3]).needed_gb  # room for one window of 24
    plan = inf.plan_windows(m, box, max_memory_gb=gb, scan_shape=c.image.shape[:3])
    assert plan.n_windows > 1 and math.prod(plan.window) <= 24 ** 3
    split = inf.predict_volume(m, c.image, max_memory_gb=gb, progress=False)
    assert np.abs(split - one).max() < 0.2 and np.abs(split - one).mean() < 2e-3


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
    model = inf.load_segmentation_model(saved_models / "unet.keras")
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


# ---------------------------------------------------------------- per-slice statistics (preprocess), as inference uses them
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e4]), constant=st.booleans())
@settings(max_examples=40, deadline=None)
def test_slice_statistics_are_standardize_s(seed, scale, constant):
    rng = np.random.default_rng(seed)
    x = (rng.normal(3, 2, (2, 6, 5, 4)) * scale).astype(np.float32)
    if constant: x[1, :, :, 2] = 7 * scale
    mean, std = slice_statistics(x)
    assert mean.shape == std.shape == (2, 1, 1, 4) and mean.dtype == np.float64
    live = std > 0
    expected = np.divide(x - mean, std, out=np.zeros(x.shape), where=live)
    np.testing.assert_allclose(standardize(x), expected, atol=2e-5)
    assert (std[1, 0, 0, 2] == 0) == constant


# ---------------------------------------------------------------- planning by predicted time
def test_plan_minimises_predicted_time_and_states_it():
    m = course_unet()
    box = (141, 176, 128)
    voxels = inf.plan_windows(m, box, max_memory_gb=3, batch_size=1, cost=voxel_cost(m))
    # a large cost per pass: fewer windows, even at more voxels
    calls = inf.plan_windows(m, box, max_memory_gb=3, batch_size=1, cost=voxel_cost(m, per_pass=1e6))
    assert calls.n_windows <= voxels.n_windows and (calls.n_windows < voxels.n_windows or calls.voxels == voxels.voxels)
    fits, _ = inf.window_candidates(box, (8, 8, 8), 1e9, overlap_voxels=12, min_window=48)
    needed = lambda w: inf.plan_windows(m, box, window=w, max_memory_gb=3, batch_size=1, cost=voxel_cost(m)).needed_gb
    fitting = [(w, n) for w, n in fits if needed(w) <= 3]
    assert calls.n_windows == min(n for _, n in fitting)
    assert voxels.voxels == min(n * math.prod(w) for w, n in fitting)
    for plan, cost in ((voxels, voxel_cost(m)), (calls, voxel_cost(m, per_pass=1e6))):
        assert plan.predicted_s == pytest.approx(plan.n_windows * cost.seconds(plan.window))
        assert f"predicted {plan.predicted_s:.3g} s" in str(plan)


def test_batches_are_planned_where_they_are_faster():
    m = tiny_unet()
    box = (30, 30, 20)
    # every pass costs a lot: eight mirrorings go in as few passes as the budget allows
    batched = inf.plan_windows(m, box, flips="all", max_memory_gb=4, cost=voxel_cost(m, per_pass=10.0))
    assert batched.batch_size == 8 and batched.n_passes == 1 and "8 mirrorings each, 8 per pass (1 pass)" in str(batched)
    assert batched.predicted_s == pytest.approx(10.0 + 8 * (voxel_cost(m).seconds(batched.window)))
    # no cost per pass: a batch saves nothing, so it is not made (ties go to the smaller batch)
    assert inf.plan_windows(m, box, flips="all", max_memory_gb=4, cost=voxel_cost(m)).batch_size == 1
    # a fixed batch is kept; a budget too small for the batch of eight makes smaller batches
    assert inf.plan_windows(m, box, flips="all", batch_size=3, cost=voxel_cost(m, per_pass=10.0)).batch_size == 3
    one = inf.plan_windows(m, box, flips="all", batch_size=1, cost=voxel_cost(m)).needed_gb
    small = inf.plan_windows(m, box, flips="all", max_memory_gb=one * 1.5, cost=voxel_cost(m, per_pass=10.0))
    assert 1 < small.batch_size < 8 and small.needed_gb <= one * 1.5


@given(box=st.tuples(st.integers(20, 120), st.integers(20, 120), st.integers(20, 120)), gb=st.floats(0.3, 4))
@settings(max_examples=25, deadline=None)
def test_no_voxel_beyond_what_the_plan_s_window_count_needs(box, gb):
    m = _small_unet()
    try: plan = inf.plan_windows(m, box, max_memory_gb=gb, batch_size=1, cost=voxel_cost(m, per_pass=0.01))
    except ValueError: return  # too small a budget for this box
    d = plan.divisor
    least = [max(k, -(-(r // 2) // k) * k) for r, k in zip(receptive_field(m), d, strict=True)]  # halo-wide windows are preferred
    assert plan.padded == tuple(-(-b // k) * k for b, k in zip(box, d, strict=True))  # never beyond the rounding
    for axis in range(3):
        assert plan.window[axis] <= plan.padded[axis]
        thinner = plan.window[axis] - d[axis]
        if thinner >= least[axis]:  # one divisor thinner (and still as wide as the halo) would need more windows along this axis
            if thinner - plan.overlap_voxels[axis] >= d[axis] or thinner >= plan.padded[axis]:
                assert len(inf.axis_starts(plan.padded[axis], thinner, plan.overlap_voxels[axis], d[axis])) > len(plan.starts[axis])


_SMALL = {}
def _small_unet():
    if "m" not in _SMALL: _SMALL["m"] = unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=3, n_base_filters=4)
    return _SMALL["m"]


# ---------------------------------------------------------------- test-time augmentation
def test_check_flips():
    assert inf.check_flips(None) == ((),) and inf.check_flips("all") == inf.ALL_FLIPS and len(set(inf.ALL_FLIPS)) == 8
    assert inf.check_flips([(), (2, 1)]) == ((), (1, 2))
    for bad, message in [("some", "flips must be"), ([], "empty"), ([1], "not a tuple of axes"), ([(0, 4)], "0 \\(x\\), 1 \\(y\\), 2 \\(z\\)"),
                         ([(True,)], "not a set"), ([(1, 1)], "not a set"), ([(0,), (0,)], "twice"), (3, "flips must be"), (["x"], "not a tuple")]:
        with pytest.raises(ValueError, match=message):
            inf.check_flips(bad)


@pytest.mark.parametrize("flips", ["all", [(), (0,)], [(1, 2)]])
def test_flips_of_a_pointwise_model_give_the_plain_prediction_exactly(case, flips):
    m = pointwise_model()
    plain = inf.predict_volume(m, case.image, progress=False)
    mean, std = inf.predict_volume(m, case.image, flips=flips, return_std=True, progress=False)
    # exact up to the last bit, which TensorFlow's own kernels may round differently at another place in a window
    np.testing.assert_allclose(mean, plain, rtol=0, atol=2e-7)
    assert std.shape == plain.shape and std.dtype == np.float32 and std.max() < 2e-7
    np.testing.assert_allclose(inf.predict_volume(m, case.image, flips=flips, progress=False), plain, rtol=0, atol=2e-7)
    # through many windows, batches spanning windows: the stitched plain answer
    tiled = inf.predict_volume(m, case.image, window=(16, 12, 8), batch_size=3, flips=flips, progress=False)
    np.testing.assert_allclose(tiled, plain, atol=1e-6)


def test_flips_average_the_mirrored_answers(case):
    m = tiny_unet()
    box = brain_box(case.image)
    flips = [(), (0,), (1, 2)]
    mean, std = inf.predict_volume(m, case.image, flips=flips, return_std=True, progress=False)
    norm, background = inf.normalize_crop(case.image[box])
    grid, inner = inf.padded_input(norm, background, tuple(-(-s // 2) * 2 for s in norm.shape[1:]))
    net = with_input_shape(m)
    answers = np.stack([np.flip(net.predict_on_batch(np.flip(grid, [a + 1 for a in f])[None])[0], [a + 1 for a in f]) for f in flips])
    crop = (slice(None), slice(None)) + inner
    np.testing.assert_allclose(mean[box], np.moveaxis(answers.mean(0)[crop[1:]], 0, -1), atol=1e-5)
    np.testing.assert_allclose(std[box], np.moveaxis(answers.std(0)[crop[1:]], 0, -1), atol=1e-5)
    assert std.max() > 0
    # several windows: a weighted mean and spread, within the range of the answers
    many, spread = inf.predict_volume(m, case.image, window=(16, 16, 8), flips=flips, return_std=True, progress=False)
    assert many.shape == spread.shape == mean.shape and (spread >= 0).all() and np.abs(many - mean).mean() < 0.02
    plain_std = inf.predict_volume(m, case.image, return_std=True, progress=False)[1]
    assert not plain_std.any()  # one mirroring: no spread


def test_bad_flips_are_refused_before_any_work(case, monkeypatch):
    def no_work(*args, **kwargs): raise AssertionError("planned or ran despite a bad flips spec")
    monkeypatch.setattr(inf, "_plan_windows", no_work)
    for bad in ("mirror", [(0, 5)], [()] * 2):
        with pytest.raises(ValueError, match="flips"):
            inf.predict_volume(pointwise_model(), case.image, flips=bad, progress=False)
    with pytest.raises(ValueError, match="intensity_normalization"):
        inf.predict_volume(pointwise_model(), case.image, intensity_normalization="zscore", progress=False)


def test_an_empty_scan_with_std(monkeypatch):
    with pytest.warns(UserWarning, match="all zeros"):
        mean, std = inf.predict_volume(pointwise_model(), np.zeros((20, 20, 10, 4), np.float32), flips="all", return_std=True)
    assert mean.shape == std.shape == (20, 20, 10, 3) and not mean.any() and not std.any()


def test_bts_predict_flips(tmp_path, saved_models, capsys):
    write_msd(tmp_path / "msd", (1,))
    case_file = str(tmp_path / "msd" / "imagesTr" / "BRATS_001.nii.gz")
    model = str(saved_models / "unet.keras")
    assert bts(["predict", case_file, "-o", str(tmp_path / "tta.nii.gz"), "--model", model, "--flips", "all"]) == 0
    labels = np.asarray(nib.load(tmp_path / "tta.nii.gz").dataobj)
    c = make_phantom(1, (32, 32, 24))
    expected = inf.predict_volume(inf.load_segmentation_model(saved_models / "unet.keras"), c.image, flips="all", progress=False)
    np.testing.assert_array_equal(labels, probabilities_to_labels(expected))
    assert bts(["predict", case_file, "-o", str(tmp_path / "two.nii.gz"), "--model", model, "--flips", "none", "xz"]) == 0
    for bad, message in ((["q"], "expected all, or mirrorings"), (["x", "x"], "twice"), (["all", "x"], "stands alone")):
        assert bts(["predict", case_file, "-o", str(tmp_path / "bad.nii.gz"), "--model", model, "--flips", *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.nii.gz").exists()


# ---------------------------------------------------------------- checked once, at the door
def test_predict_volume_checks_each_input_once(case, monkeypatch):
    "predict_volume checks the image, the mirrorings, the model's inputs and outputs and the box once; the steps it calls check nothing again"
    counts = {}
    def counted(name, f):
        def wrapper(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return f(*args, **kwargs)
        return wrapper
    for name in ("check_flips", "model_io", "check_image", "check_size", "check_divisible"):
        monkeypatch.setattr(inf, name, counted(name, getattr(inf, name)))
    mean, std = inf.predict_volume(tiny_unet(), case.image, window=(16, 16, 8), flips=[(), (0,)], return_std=True, progress=False)
    # check_size: the window asked for, at the door; and the plan's window once more inside gaussian_weights, the course's
    # exercise, whose own check stays as learners write it
    assert counts == {"check_flips": 1, "model_io": 1, "check_image": 1, "check_size": 2, "check_divisible": 1}
    assert mean.shape == std.shape == case.image.shape[:3] + (3,)


def test_window_plan_box_is_box_shape_with_a_warning():
    plan = inf.plan_windows(tiny_unet(), (30, 30, 20), max_memory_gb=1, cost=voxel_cost(tiny_unet()))
    assert plan.box_shape == (30, 30, 20) and "brain box 30×30×20" in str(plan)
    with pytest.warns(DeprecationWarning, match="box_shape"):
        assert plan.box == plan.box_shape


def test_moved_names_answer_at_the_old_address_with_a_warning():
    for name in ("forward_cost", "ForwardCost", "default_memory_gb", "activation_bytes", "COST_TERMS"):
        with pytest.warns(DeprecationWarning, match=f"moved to bts_course.costs.{name}"):
            assert getattr(inf, name) is getattr(costs, name)
    with pytest.raises(AttributeError):
        inf.no_such_name  # noqa: B018
