"""Tests of bts_course.scores (numpy sensitivity / specificity, binary dice, HD95, BraTS region tables) against
independent computations: voxel-by-voxel counts, brute-force surface distances, hand-computed cases, hostile inputs,
hypothesis properties and the official BraTS evaluation package."""
import math, warnings
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from scipy.spatial.distance import cdist

from bts_course.data import CLASS_NAMES
from bts_course.scores import (compute_class_sens_spec, get_sens_spec_df, surface, surface_distances, hd95, binary_dice,
                               brats_region_metrics, BRATS_REGIONS, REGION_COLUMNS, BRATS_HD95_PENALTY, REGION_CONVENTIONS,
                               check_convention, region_scores)


# ---------------------------------------------------------------- independent references

def ref_surface(mask):
    "Voxels of `mask` with a face-neighbour outside it (outside the array counts as outside), by padding and shifting"
    padded = np.pad(mask, 1, constant_values=False)
    inner = np.ones_like(mask)
    for ax in range(mask.ndim):
        for step in (-1, 1):
            sl = [slice(1, -1)] * mask.ndim
            sl[ax] = slice(1 + step, padded.shape[ax] - 1 + step)
            inner &= padded[tuple(sl)]
    return mask & ~inner

def ref_hd95(p, t, spacing):
    "Pooled 95th percentile of both directed surface distances, by brute force over all pairs"
    sp = np.argwhere(ref_surface(p)) * np.asarray(spacing, float)
    stt = np.argwhere(ref_surface(t)) * np.asarray(spacing, float)
    d = cdist(sp, stt)
    return np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)

def ref_sens_spec(p, t):
    "Sensitivity and specificity by counting voxel by voxel"
    tp = fn = fp = tn = 0
    for a, b in zip(p.ravel().tolist(), t.ravel().tolist(), strict=True):
        if b and a: tp += 1
        elif b: fn += 1
        elif a: fp += 1
        else: tn += 1
    return (tp / (tp + fn) if tp + fn else math.nan), (tn / (tn + fp) if tn + fp else math.nan)

def blobs(rng, shape, n=1, sigma=1.5, level=0.55):
    "Smooth random binary masks"
    return [ndimage.gaussian_filter(rng.random(shape), sigma) > level for _ in range(n)]

def random_labels(rng, shape):
    "A random label map with codes 0-3 in smooth nested-ish blobs"
    lab = np.zeros(shape, np.uint8)
    for code, level in ((1, 0.52), (2, 0.54), (3, 0.56)):
        lab[ndimage.gaussian_filter(rng.random(shape), 1.5) > level] = code
    return lab

# ---------------------------------------------------------------- course reference values


EYE = np.eye(2, dtype=np.float32)[..., None]
TOP = np.array([[1, 1], [0, 0]], np.float32)[..., None]
TOP_CORNER = np.array([[1, 1], [0, 1]], np.float32)[..., None]
SOFT = np.array([[1, 0.8], [0, 1]], np.float32)[..., None]
CUBE = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 1]]], np.float32)
CUBE_LABELS = np.array([[[[1, 0], [1, 0]], [[1, 0], [0, 0]]], [[[0, 0], [0, 0]], [[1, 0], [0, 0]]]], np.float32)

def test_course_sens_spec_reference_values():
    preds = np.array([1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]).reshape(1, 14, 1, 1)
    truth = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]).reshape(1, 14, 1, 1)
    got = [compute_class_sens_spec(EYE[None], TOP[None], 0), compute_class_sens_spec(EYE[None], TOP_CORNER[None], 0),
           compute_class_sens_spec(preds, truth, 0)]
    assert [tuple(round(v, 4) for v in r) for r in got] == [(0.5, 0.5), (0.6667, 1.0), (0.2857, 0.4286)]

# ---------------------------------------------------------------- sensitivity / specificity

def test_sens_spec_random_vs_loops():
    rng = np.random.default_rng(2)
    p = rng.random((3, 6, 5, 4)) > 0.5
    t = rng.random((3, 6, 5, 4)) > 0.6
    df = get_sens_spec_df(p.astype(np.float32), t.astype(np.uint8))
    assert list(df.columns) == list(CLASS_NAMES) and list(df.index) == ["Sensitivity", "Specificity"]
    assert df.dtypes.tolist() == [np.float64] * 3
    for c, name in enumerate(CLASS_NAMES):
        want = ref_sens_spec(p[c], t[c])
        assert compute_class_sens_spec(p, t, c) == pytest.approx(want)
        assert (df.loc["Sensitivity", name], df.loc["Specificity", name]) == pytest.approx(want)

def test_sens_spec_absent_class_is_nan_without_warning():
    p = np.zeros((3, 4, 4, 2)); t = np.zeros((3, 4, 4, 2))
    p[0, 0, 0, 0] = 1; t[0, 0, 0, 0] = 1       # only edema present
    t[2] = 1; p[2] = 1                          # enhancing everywhere: no negatives
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = get_sens_spec_df(p, t)
    assert df["Edema"].tolist() == [1.0, 1.0]
    assert math.isnan(df.loc["Sensitivity", "Non-Enhancing Tumor"]) and df.loc["Specificity", "Non-Enhancing Tumor"] == 1.0
    assert df.loc["Sensitivity", "Enhancing Tumor"] == 1.0 and math.isnan(df.loc["Specificity", "Enhancing Tumor"])

def test_sens_spec_refused_inputs():
    ok = np.zeros((3, 4, 4, 2))
    with pytest.raises(ValueError, match="threshold"):
        compute_class_sens_spec(np.full_like(ok, 0.7), ok, 0)
    with pytest.raises(ValueError, match="non-finite"):
        compute_class_sens_spec(np.where(ok == 0, np.nan, 0), ok, 0)
    with pytest.raises(ValueError, match="same shape"):
        compute_class_sens_spec(ok, ok[:, :3], 0)
    with pytest.raises(ValueError, match="found scalars"):
        compute_class_sens_spec(np.float64(1), np.float64(1), 0)
    with pytest.raises(ValueError, match="out of range"):
        compute_class_sens_spec(ok, ok, 3)
    with pytest.raises(ValueError, match="background"):
        get_sens_spec_df(np.zeros((4, 4, 4, 2)), np.zeros((4, 4, 4, 2)))

# ---------------------------------------------------------------- HD95

def test_surface_matches_reference():
    rng = np.random.default_rng(4)
    for m in blobs(rng, (15, 12, 9), n=3, level=0.5):
        np.testing.assert_array_equal(surface(m), ref_surface(m))

@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_offset_cubes(k, axis):
    spacing = (0.8, 1.5, 3.0)
    a = np.zeros((30, 30, 30), bool); a[8:18, 8:18, 8:18] = True
    b = np.roll(a, k, axis=axis)
    assert hd95(b, a, spacing) == pytest.approx(k * spacing[axis], abs=1e-12)
    assert hd95(a, b, spacing) == pytest.approx(k * spacing[axis], abs=1e-12)
    assert ref_hd95(b, a, spacing) == pytest.approx(k * spacing[axis], abs=1e-12)   # the hand computation holds

def test_hd95_random_vs_brute_force():
    rng = np.random.default_rng(5)
    for shape in [(20, 18, 12), (25, 10, 16)]:
        p, t = blobs(rng, shape, n=2)
        spacing = tuple(rng.uniform(0.5, 2.5, 3))
        for method in ("auto", "edt", "kdtree"):
            assert hd95(p, t, spacing, method) == pytest.approx(ref_hd95(p, t, spacing), abs=1e-9)
        assert hd95(p, t, spacing) == hd95(t, p, spacing)

def test_hd95_sparse_surfaces_both_methods():
    "Scattered voxels in a large box (where auto picks the k-d tree) against brute force and the distance transform"
    rng = np.random.default_rng(9)
    spacing = (1.0, 0.7, 2.0)
    p, t = rng.random((40, 36, 30)) > 0.998, rng.random((40, 36, 30)) > 0.998
    t[5:12, 5:12, 5:12] = True
    want = ref_hd95(p, t, spacing)
    for method in ("auto", "edt", "kdtree"):
        assert hd95(p, t, spacing, method) == pytest.approx(want, abs=1e-9)
    to_t, to_p = surface_distances(p, t, spacing, "kdtree")
    e_t, e_p = surface_distances(p, t, spacing, "edt")
    np.testing.assert_allclose(to_t, e_t, atol=1e-9)
    np.testing.assert_allclose(to_p, e_p, atol=1e-9)
    with pytest.raises(ValueError, match="method"):
        hd95(p, t, method="fast")

def test_hd95_masks_touching_the_border_and_2d():
    rng = np.random.default_rng(6)
    p, t = blobs(rng, (12, 12, 8), n=2, level=0.45)
    p[0], t[:, -1] = True, True                          # surfaces on the array's faces
    assert hd95(p, t) == pytest.approx(ref_hd95(p, t, (1, 1, 1)), abs=1e-9)
    p2, t2 = blobs(rng, (30, 30), n=2, sigma=2.0, level=0.5)
    assert hd95(p2, t2, (1.0, 0.5)) == pytest.approx(ref_hd95(p2, t2, (1.0, 0.5)), abs=1e-9)

def test_hd95_empty_conventions_and_errors():
    a = np.zeros((5, 5, 5), bool); e = np.zeros_like(a); a[2, 2, 2] = True
    assert hd95(e, e) == 0.0 and hd95(a, a) == 0.0
    assert hd95(a, e) == math.inf and hd95(e, a) == math.inf
    with pytest.raises(ValueError, match="same shape"):
        hd95(a, a[:4])
    with pytest.raises(ValueError, match="positive finite"):
        hd95(a, a, spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="positive finite"):
        hd95(a, a, spacing=(1, 1))
    with pytest.raises(ValueError, match="non-finite"):
        hd95(np.full((5, 5, 5), np.nan), a)

# ---------------------------------------------------------------- BraTS region table

def test_region_table_random_vs_reference():
    rng = np.random.default_rng(7)
    spacing = (1.0, 1.2, 2.0)
    pred, truth = random_labels(rng, (22, 20, 12)), random_labels(rng, (22, 20, 12))
    df = brats_region_metrics(pred, truth, spacing, convention="medpy")   # the real distances, overlap or not
    official = brats_region_metrics(pred, truth, spacing)
    assert list(df.index) == ["Whole tumor", "Tumor core", "Enhancing tumor"] == list(BRATS_REGIONS)
    assert list(df.columns) == list(REGION_COLUMNS) == ["Dice", "Sensitivity", "Specificity", "HD95"]
    for name, codes in {"Whole tumor": [1, 2, 3], "Tumor core": [2, 3], "Enhancing tumor": [3]}.items():
        p = np.zeros(pred.shape, bool); t = np.zeros(pred.shape, bool)
        for code in codes: p |= pred == code; t |= truth == code
        assert df.loc[name, "Dice"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
        assert (df.loc[name, "Sensitivity"], df.loc[name, "Specificity"]) == pytest.approx(ref_sens_spec(p, t))
        assert df.loc[name, "HD95"] == pytest.approx(ref_hd95(p, t, spacing), abs=1e-9)
        want = ref_hd95(p, t, spacing) if (p & t).any() else 373.0       # the official penalty where nothing overlaps
        assert official.loc[name, "HD95"] == pytest.approx(want, abs=1e-9)
        assert official.loc[name, "Dice"] == df.loc[name, "Dice"]

def test_region_table_identical_and_empty():
    "The 'medpy' convention (the only one before the official BraTS one became the default)"
    rng = np.random.default_rng(8)
    truth = random_labels(rng, (16, 16, 10))
    same = brats_region_metrics(truth, truth, convention="medpy")
    assert same["Dice"].tolist() == [1.0] * 3 and same["HD95"].tolist() == [0.0] * 3
    truth_no_et = np.where(truth == 3, 2, truth)
    both_empty = brats_region_metrics(truth_no_et, truth_no_et, convention="medpy").loc["Enhancing tumor"]
    assert both_empty["Dice"] == 1.0 and math.isnan(both_empty["Sensitivity"])
    assert both_empty["Specificity"] == 1.0 and both_empty["HD95"] == 0.0
    missed = brats_region_metrics(truth_no_et, truth, convention="medpy").loc["Enhancing tumor"]   # truth has ET, prediction none
    assert (missed["Dice"], missed["Sensitivity"], missed["Specificity"], missed["HD95"]) == (0.0, 0.0, 1.0, math.inf)
    invented = brats_region_metrics(truth, truth_no_et, convention="medpy").loc["Enhancing tumor"]  # prediction has ET, truth none
    assert invented["Dice"] == 0.0 and math.isnan(invented["Sensitivity"])
    assert invented["Specificity"] < 1.0 and invented["HD95"] == math.inf
    zeros = np.zeros((6, 6, 6), np.uint8)
    assert brats_region_metrics(zeros, zeros, convention="medpy")["Dice"].tolist() == [1.0] * 3

def test_region_table_official_convention_is_the_default():
    "'brats': NaN when a region is in neither mask, Dice 0 and HD95 373 mm whenever the masks share no voxel"
    rng = np.random.default_rng(8)
    truth = random_labels(rng, (16, 16, 10))
    same = brats_region_metrics(truth, truth)
    assert same["Dice"].tolist() == [1.0] * 3 and same["HD95"].tolist() == [0.0] * 3
    truth_no_et = np.where(truth == 3, 2, truth)
    both_empty = brats_region_metrics(truth_no_et, truth_no_et).loc["Enhancing tumor"]
    assert math.isnan(both_empty["Dice"]) and math.isnan(both_empty["HD95"]) and math.isnan(both_empty["Sensitivity"])
    assert both_empty["Specificity"] == 1.0                                        # sensitivity / specificity: as before
    missed = brats_region_metrics(truth_no_et, truth).loc["Enhancing tumor"]
    assert missed.tolist() == [0.0, 0.0, 1.0, BRATS_HD95_PENALTY] and BRATS_HD95_PENALTY == 373.0
    invented = brats_region_metrics(truth, truth_no_et).loc["Enhancing tumor"]
    assert (invented["Dice"], invented["HD95"]) == (0.0, 373.0) and math.isnan(invented["Sensitivity"])
    zeros = np.zeros((6, 6, 6), np.uint8)
    assert brats_region_metrics(zeros, zeros)[["Dice", "HD95"]].isna().all().all()
    # both present, no voxel in common: the real distance under 'medpy', the penalty under 'brats'
    a = np.zeros((30, 30, 30), np.uint8); a[2:6, 2:6, 2:6] = 3
    b = np.zeros_like(a); b[20:24, 20:24, 20:24] = 3
    assert brats_region_metrics(b, a).loc["Enhancing tumor", ["Dice", "HD95"]].tolist() == [0.0, 373.0]
    medpy = brats_region_metrics(b, a, convention="medpy").loc["Enhancing tumor", "HD95"]
    assert medpy == pytest.approx(ref_hd95(b > 0, a > 0, (1, 1, 1)), abs=1e-9) and 20 < medpy < 373
    assert region_scores(b > 0, a > 0) == (0.0, 373.0)

@pytest.mark.parametrize("convention", ["brats", "medpy"])
def test_region_table_anisotropic_under_both_conventions(convention):
    "Where the masks overlap the conventions agree, and the spacing scales HD95 under both"
    rng = np.random.default_rng(11)
    spacing = (0.9, 1.3, 2.5)
    truth = random_labels(rng, (22, 20, 12))
    pred = np.roll(truth, 2, axis=2)
    df = brats_region_metrics(pred, truth, spacing, convention=convention)
    for name, codes in BRATS_REGIONS.items():
        p, t = np.isin(pred, codes), np.isin(truth, codes)
        assert (p & t).any()
        assert df.loc[name, "HD95"] == pytest.approx(ref_hd95(p, t, spacing), abs=1e-9)
        assert df.loc[name, "Dice"] == binary_dice(p, t)
    cubes = np.zeros((30, 30, 30), np.uint8); cubes[8:18, 8:18, 8:18] = 3
    moved = np.roll(cubes, 2, axis=2)
    assert brats_region_metrics(moved, cubes, spacing, convention)["HD95"].tolist() == pytest.approx([2 * 2.5] * 3)

def test_unknown_convention_lists_the_valid_ones():
    lab = np.zeros((6, 6, 6), np.uint8); lab[2:4, 2:4, 2:4] = 3
    for bad in ("BraTS", "official", "", None, ["brats"]):
        with pytest.raises(ValueError, match=r"convention must be one of .brats., .medpy., got"):
            brats_region_metrics(lab, lab, convention=bad)
    with pytest.raises(ValueError, match="convention must be one of"):
        region_scores(lab > 0, lab > 0, convention="mean")
    assert check_convention("brats") == "brats" and list(REGION_CONVENTIONS) == ["brats", "medpy"]

def test_region_table_refused_inputs():
    lab = np.zeros((6, 6, 6), np.uint8); lab[2:4, 2:4, 2:4] = 3
    with pytest.raises(ValueError, match="BraTS 2018-2021"):
        brats_region_metrics(np.where(lab == 3, 4, 0), lab)
    with pytest.raises(ValueError, match="codes"):
        brats_region_metrics(lab.astype(np.int16) - 1, lab)
    with pytest.raises(ValueError, match="whole numbers"):
        brats_region_metrics(lab + 0.5, lab)
    with pytest.raises(ValueError, match="non-finite"):
        brats_region_metrics(np.where(lab == 3, np.nan, 0), lab)
    with pytest.raises(ValueError, match="3D label map"):
        brats_region_metrics(lab[0], lab[0])
    with pytest.raises(ValueError, match="same shape"):
        brats_region_metrics(lab, lab[:5])
    with pytest.raises(ValueError, match="spacing"):
        brats_region_metrics(lab, lab, spacing=(1, 1, float("nan")))
    # float label maps with whole-number codes are fine
    assert brats_region_metrics(lab.astype(np.float32), lab)["Dice"].tolist() == [1.0] * 3

# ---------------------------------------------------------------- properties (hypothesis)

@st.composite
def mask_pairs(draw):
    shape = draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6))
    return draw(hnp.arrays(np.bool_, shape)), draw(hnp.arrays(np.bool_, shape))

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

@PROPS
@given(mask_pairs())
def test_dice_properties_numpy(masks):
    a, b = masks
    d = binary_dice(a, b)
    assert d == binary_dice(b, a)
    assert 0.0 <= d <= 1.0
    assert binary_dice(a, a) == 1.0
    assert (d == 1.0) == np.array_equal(a, b)   # without epsilon, dice is 1 only for identical masks

# ---------------------------------------------------------------- the official BraTS evaluation package
# `brats-evaluation` (PyPI; built on `panoptica`) computes the BraTS 2023+ leaderboards. It is in the dev extra
# (it pins numpy<2.3, pandas<3 and rich<14, which this package works with); BRATS_EVALUATION_PYTHON may instead
# name another interpreter that has it (e.g. `python3 -m venv V && V/bin/pip install brats-evaluation==0.0.10`). Its command line `brats-evaluate` and `parse_seg_results` run as the
# challenge runs them; we compare their whole-case ("global") Dice and HD95 with ours, value for value.
# At 1 mm only: the package measures the whole-case HD95 in voxels, ignoring the voxel spacing (a known
# limitation of its global metrics), where we use the spacing.
import importlib.util, json, os, subprocess, sys
from pathlib import Path
import nibabel as nib
import pandas as pd
from bts_course.data import LAYOUTS, example_patches, read_case

SHARED_PATCHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "course_patches" / "train"  # shared/ sits beside the checkout
TO_2023 = np.zeros(4, np.uint8)
for file_code, course_code in LAYOUTS["brats2023"].label_map.items(): TO_2023[course_code] = file_code   # course code -> 2023 code
OFFICIAL_REGIONS = {"Whole tumor": "wt", "Tumor core": "tc", "Enhancing tumor": "et"}   # ours -> the package's group names

def _official_python():
    "An interpreter that has brats_evaluation, or None"
    if os.environ.get("BRATS_EVALUATION_PYTHON"): return os.environ["BRATS_EVALUATION_PYTHON"]
    return sys.executable if importlib.util.find_spec("brats_evaluation") else None

@pytest.fixture(scope="module")
def official():
    "run(ref_dir, pred_dir, work_dir) -> the package's per-case table, indexed by the reference file's name"
    python = _official_python()
    if python is None:
        pytest.skip("the official package is not installed: pip install -e '.[dev]' (or set BRATS_EVALUATION_PYTHON "
                    "to an interpreter that has brats-evaluation)")
    def run(ref_dir, pred_dir, work):
        summary, csv = work / "summary.json", work / "official.csv"
        cmd = [python, "-m", "brats_evaluation.evaluation", "--ref_path", str(ref_dir), "--pred_path", str(pred_dir),
               "--config", "gli", "--summary_json", str(summary)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, encoding="utf-8",  # it prints a banner
                              env={**os.environ, "PYTHONIOENCODING": "utf-8"})                 # in box-drawing characters
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(summary.read_text(encoding="utf-8"))
        assert report["missings"] == [] and not [m for m in report["metrics"] if "error" in m], done.stdout[-3000:]
        parse = f"from brats_evaluation import parse_seg_results; parse_seg_results({str(summary)!r}, {str(csv)!r})"
        done = subprocess.run([python, "-c", parse], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        table = pd.read_csv(csv).set_index("subject_id")
        return table.drop(index=["mean", "std", "median"])
    return run

def _write_label(array, path):
    "A label map as the challenge ships them: uint8 NIfTI, 1 mm"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, np.uint8), np.eye(4)), str(path))

def _shift(lab, k, axis):
    "`lab` moved by k voxels along `axis`, background coming in"
    out = np.zeros_like(lab)
    src, dst = [slice(None)] * 3, [slice(None)] * 3
    src[axis], dst[axis] = slice(0, lab.shape[axis] - k), slice(k, None)
    out[tuple(dst)] = lab[tuple(src)]
    return out

def perturbations(truth, rng, subset=None):
    "name -> (prediction, reference), course codes: shifts, erosion, dilation, a class removed, empty, scattered, disjoint"
    tumour = truth > 0
    no_et = np.where(truth == 3, 2, truth)
    scattered = np.zeros_like(truth)
    scattered.flat[rng.choice(truth.size, 400, replace=False)] = rng.integers(1, 4, 400)
    elsewhere = no_et.copy()                                  # enhancing tumour inside the core, away from the true one
    far_core = np.argwhere((no_et == 2) & (ndimage.distance_transform_edt(truth != 3) > 3))
    elsewhere[tuple(far_core[: max(len(far_core) // 4, 1)].T)] = 3
    zeros = np.zeros_like(truth)
    cases = {
        "identical": (truth, truth),
        "shift 1 x": (_shift(truth, 1, 0), truth), "shift 3 y": (_shift(truth, 3, 1), truth),
        "shift 7 x": (_shift(truth, 7, 0), truth), "shift 2 z": (_shift(truth, 2, 2), truth),
        "eroded": (np.where(ndimage.binary_erosion(tumour, iterations=2), truth, 0), truth),
        "dilated": (np.where(ndimage.binary_dilation(tumour, iterations=2) & ~tumour, 1, truth), truth),
        "no edema": (np.where(truth == 1, 0, truth), truth), "no core": (np.where(truth == 2, 0, truth), truth),
        "no ET": (np.where(truth == 3, 0, truth), truth), "ET as core": (no_et, truth),
        "ET elsewhere": (elsewhere, truth), "ET invented": (truth, no_et), "ET in neither": (no_et, no_et),
        "empty": (zeros, truth), "reference empty": (truth, zeros), "both empty": (zeros, zeros),
        "scattered": (scattered, truth), "tumour and scattered": (np.where((scattered > 0) & ~tumour, scattered, truth), truth),
    }
    return {k: v for k, v in cases.items() if subset is None or k in subset}

def real_truths(n_shared: int = 5):
    "Label maps of the real patches: the four shipped with the package, and `n_shared` of the shared ones when they are here"
    truths = {p.name: p.label for p in example_patches()}
    if SHARED_PATCHES.is_dir():
        import h5py
        shipped = set(truths)
        for f in [f for f in sorted(SHARED_PATCHES.glob("*.h5")) if f.name not in shipped][:n_shared]:
            with h5py.File(f, "r") as h5: truths[f.name] = np.asarray(h5["y"]).argmax(-1).astype(np.uint8)
    return truths

def _compare(ours, theirs, where):
    "Dice and HD95 of every region, value for value (NaN = NaN)"
    for region, group in OFFICIAL_REGIONS.items():
        for score, column in (("Dice", f"global_dsc_{group}"), ("HD95", f"global_hd95_{group}")):
            a, b = float(ours.loc[region, score]), float(theirs[column])
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=0, abs=1e-9), (where, region, score, a, b)

def test_official_package_value_for_value_on_real_label_maps(official, tmp_path):
    """Every perturbation of two shipped patches' labels; five of them (a shift, erosion, the two enhancing-tumour
    mistakes, scattered voxels) on the other two and on five of the shared patches' labels; at 1 mm"""
    rng = np.random.default_rng(16)
    pairs = {}
    for k, (name, truth) in enumerate(real_truths().items()):
        subset = None if k < 2 else ("shift 3 y", "eroded", "ET as core", "ET elsewhere", "scattered")
        for what, (pred, ref) in perturbations(truth, rng, subset).items():
            subject = f"BraTS-GLI-{len(pairs) + 1:05d}-000"
            _write_label(TO_2023[ref], tmp_path / "ref" / f"{subject}-seg.nii.gz")
            _write_label(TO_2023[pred], tmp_path / "pred" / f"{subject}.nii.gz")
            pairs[subject] = (f"{name}: {what}", pred, ref)
    theirs = official(tmp_path / "ref", tmp_path / "pred", tmp_path)
    assert sorted(theirs.index) == sorted(f"{s}-seg.nii.gz" for s in pairs)
    n_nan = n_penalty = 0
    for subject, (where, pred, ref) in pairs.items():
        ours = brats_region_metrics(pred, ref)                   # the default convention, 1 mm
        _compare(ours, theirs.loc[f"{subject}-seg.nii.gz"], where)
        n_nan += int(ours["HD95"].isna().sum()); n_penalty += int((ours["HD95"] == 373.0).sum())
    assert len(pairs) >= 2 * 19 + 2 * 5 and n_nan >= 2 * 3 and n_penalty >= 2 * 8   # the edge cases were exercised

def test_brats2023_case_through_read_case_scores_as_the_leaderboard(official, tmp_path):
    "A BraTS 2023 case folder (-seg in 2023 codes) read by read_case and scored by us, against the package on the raw files"
    from bts_course.evaluation import score_prediction
    rng = np.random.default_rng(2023)
    subjects = {}
    for k, patch in enumerate(example_patches()):
        subject = f"BraTS-GLI-{k + 9:05d}-000"
        folder = tmp_path / "cases" / subject
        folder.mkdir(parents=True)
        for c, suffix in enumerate(LAYOUTS["brats2023"].modality_suffixes):      # FLAIR, T1w, T1gd, T2w -> t2f, t1n, t1c, t2w
            nib.save(nib.Nifti1Image(patch.x[c], np.eye(4)), str(folder / f"{subject}{suffix}.nii.gz"))
        _write_label(TO_2023[patch.label], folder / f"{subject}-seg.nii.gz")
        what = ("shift 3 y", "ET elsewhere", "dilated", "no core")[k]
        pred, _ = perturbations(patch.label, rng, (what,))[what]
        _write_label(TO_2023[pred], tmp_path / "pred" / f"{subject}.nii.gz")
        (tmp_path / "ref").mkdir(exist_ok=True)
        (tmp_path / "ref" / f"{subject}-seg.nii.gz").write_bytes((folder / f"{subject}-seg.nii.gz").read_bytes())  # the raw file
        subjects[subject] = (folder, pred)
    theirs = official(tmp_path / "ref", tmp_path / "pred", tmp_path)
    for subject, (folder, pred) in subjects.items():
        case = read_case(folder)
        assert case.layout == "brats2023" and set(np.unique(case.label)) <= {0, 1, 2, 3}
        raw = np.asarray(nib.load(str(folder / f"{subject}-seg.nii.gz")).dataobj)
        assert ((case.label == 1) == (raw == 2)).all() and ((case.label == 2) == (raw == 1)).all()   # edema and core swapped
        ours = score_prediction(case, pred).regions                # our default convention, spacing from the affine
        _compare(ours, theirs.loc[f"{subject}-seg.nii.gz"], subject)
