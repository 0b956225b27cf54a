"""Tests of bts_course.metrics (the Keras dice, loss and class metrics) against independent computations:
numpy loops and sums, hand-computed cases, Keras training / saving, hostile inputs and hypothesis properties."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra import numpy as hnp

import keras
import tensorflow as tf
from bts_course.metrics import (single_class_dice_coefficient, dice_coefficient, soft_dice_loss, class_dice, dice_edema,
                                dice_enhancing, CLASS_DICE_METRICS)


# ---------------------------------------------------------------- independent references

def ref_dice(t, p, eps=1e-5, squared=False):
    "Dice of two arrays, written out with float64 numpy sums"
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    den = (t ** 2).sum() + (p ** 2).sum() if squared else t.sum() + p.sum()
    return (2 * (t * p).sum() + eps) / (den + eps)

def ref_batch_dice(t, p, eps=1e-5, squared=False):
    "Mean over samples and classes of (B, C, X, Y, Z) arrays, by explicit loops"
    return np.mean([[ref_dice(t[b, c], p[b, c], eps, squared) for c in range(t.shape[1])] for b in range(t.shape[0])])

# ---------------------------------------------------------------- course reference values (epsilon = 1)

EYE = np.eye(2, dtype=np.float32)[..., None]
TOP = np.array([[1, 1], [0, 0]], np.float32)[..., None]
TOP_CORNER = np.array([[1, 1], [0, 1]], np.float32)[..., None]
SOFT = np.array([[1, 0.8], [0, 1]], np.float32)[..., None]
CUBE = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 1]]], np.float32)
CUBE_LABELS = np.array([[[[1, 0], [1, 0]], [[1, 0], [0, 0]]], [[[0, 0], [0, 0]], [[1, 0], [0, 0]]]], np.float32)

@pytest.mark.parametrize("fn,label,pred,expected", [
    (single_class_dice_coefficient, TOP, EYE, 0.6000),
    (single_class_dice_coefficient, TOP_CORNER, EYE, 0.8333),
    (dice_coefficient, TOP[None], EYE[None], 0.6000),
    (dice_coefficient, TOP_CORNER[None], EYE[None], 0.8333),
    (dice_coefficient, np.stack([TOP, TOP_CORNER]), np.stack([EYE, EYE]), 0.7167),
    (soft_dice_loss, TOP[None], EYE[None], 0.4000),
    (soft_dice_loss, TOP[None], 0.5 * EYE[None], 0.4286),
    (soft_dice_loss, TOP_CORNER[None], EYE[None], 0.1667),
    (soft_dice_loss, TOP_CORNER[None], SOFT[None], 0.0060),
    (soft_dice_loss, np.stack([TOP, TOP_CORNER]), np.stack([0.5 * EYE, SOFT]), 0.2173),
    (soft_dice_loss, CUBE_LABELS, np.stack([CUBE, CUBE]), 0.4375),
])
def test_course_reference_values(fn, label, pred, expected):
    assert round(float(fn(label, pred, epsilon=1)), 4) == expected

# ---------------------------------------------------------------- dice / loss vs numpy, batches, axes

@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    t = (rng.random((3, 3, 12, 10, 6)) > 0.6).astype(np.float32)
    p = np.clip(t + rng.normal(0, 0.4, t.shape), 0, 1).astype(np.float32)
    return t, p

def test_single_class_matches_numpy(batch):
    t, p = batch
    assert float(single_class_dice_coefficient(t[0, 0], p[0, 0])) == pytest.approx(ref_dice(t[0, 0], p[0, 0]), rel=1e-5)
    # a (B, X, Y, Z) batch of one class: mean of per-sample dice
    want = np.mean([ref_dice(t[b, 0], p[b, 0]) for b in range(3)])
    assert float(single_class_dice_coefficient(t[:, 0], p[:, 0])) == pytest.approx(want, rel=1e-5)

def test_unbatched_matches_numpy(batch):
    t, p = batch
    assert float(dice_coefficient(t[1], p[1])) == pytest.approx(np.mean([ref_dice(t[1, c], p[1, c]) for c in range(3)]), rel=1e-5)
    want = 1 - np.mean([ref_dice(t[1, c], p[1, c], squared=True) for c in range(3)])
    assert float(soft_dice_loss(t[1], p[1])) == pytest.approx(want, rel=1e-5)

def test_batch_is_per_sample_per_class(batch):
    t, p = batch
    assert float(dice_coefficient(t, p)) == pytest.approx(ref_batch_dice(t, p), rel=1e-5)
    assert float(soft_dice_loss(t, p)) == pytest.approx(1 - ref_batch_dice(t, p, squared=True), rel=1e-5)

def test_batch_differs_from_course_axis_pooling():
    "The course's axis=(1, 2, 3) applied literally to a batch pools classes and two spatial axes"
    t = np.zeros((2, 3, 8, 8, 4), np.float32)
    t[:, 0, :6, :6] = 1; t[:, 2, 6:, 6:, :2] = 1       # a large class 0, a small class 2 in two z-slices
    p = t.copy(); p[1, 2] = 0                           # sample 2 misses class 2 entirely
    pooled = np.mean((2 * (t * p).sum(axis=(1, 2, 3)) + 1e-5) / (t.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3)) + 1e-5))
    ours = float(dice_coefficient(t, p))
    assert ours == pytest.approx(ref_batch_dice(t, p), abs=1e-6)
    assert ours == pytest.approx(5 / 6, abs=1e-6)          # class 1 empty in both (dice 1), one class at 0
    assert pooled > 0.95                                   # the pooled value hides the missed class

def test_explicit_and_negative_axes(batch):
    t, p = batch
    want = ref_batch_dice(t, p)
    assert float(dice_coefficient(t, p, axis=(-3, -2, -1))) == pytest.approx(want, rel=1e-5)
    # channels last: axis (0, 1, 2) of an (X, Y, Z, C) sample, shifted for an (B, X, Y, Z, C) batch
    t_last, p_last = np.moveaxis(t, 1, -1), np.moveaxis(p, 1, -1)
    assert float(dice_coefficient(t_last, p_last, axis=(0, 1, 2))) == pytest.approx(want, rel=1e-5)
    assert float(dice_coefficient(t_last[0], p_last[0], axis=(0, 1, 2))) == pytest.approx(
        np.mean([ref_dice(t[0, c], p[0, c]) for c in range(3)]), rel=1e-5)

def test_class_metrics(batch):
    t, p = batch
    for c, metric in enumerate(CLASS_DICE_METRICS):
        want = np.mean([ref_dice(t[b, c], p[b, c]) for b in range(3)])
        assert float(metric(t, p)) == pytest.approx(want, rel=1e-5)
        assert float(class_dice(t, p, c)) == pytest.approx(want, rel=1e-5)
    assert [m.__name__ for m in CLASS_DICE_METRICS] == ["dice_edema", "dice_non_enhancing", "dice_enhancing"]
    with pytest.raises(ValueError, match="2 channels"):
        dice_enhancing(t[:, :2], p[:, :2])

def test_float16_predictions(batch):
    t, p = batch
    out = dice_coefficient(t, p.astype(np.float16))
    assert out.dtype == tf.float32
    assert float(out) == pytest.approx(float(dice_coefficient(t, p)), abs=1e-3)
    assert float(soft_dice_loss(t.astype(np.float16), p.astype(np.float16))) == pytest.approx(float(soft_dice_loss(t, p)), abs=1e-3)
    # integer and boolean masks are accepted too
    assert float(dice_coefficient(t.astype(bool), t.astype(np.uint8))) == pytest.approx(1.0)

def test_empty_masks_give_one():
    z = np.zeros((3, 4, 4, 4), np.float32)
    assert float(dice_coefficient(z, z)) == 1.0
    assert float(soft_dice_loss(z, z)) == 0.0

# ---------------------------------------------------------------- refused inputs

@pytest.mark.parametrize("fn", [single_class_dice_coefficient, dice_coefficient, soft_dice_loss, dice_edema])
def test_nonfinite_refused(fn):
    t = np.ones((1, 3, 4, 4, 4), np.float32)
    bad = t.copy(); bad[0, 0, 0, 0, 0] = np.nan
    args = (t[:, 0], bad[:, 0]) if fn is single_class_dice_coefficient else (t, bad)
    with pytest.raises(ValueError, match="1 non-finite"):
        fn(*args)
    inf = t.copy(); inf[..., 1] = np.inf
    args = (inf[:, 0], t[:, 0]) if fn is single_class_dice_coefficient else (inf, t)
    with pytest.raises(ValueError, match="y_true: .*non-finite"):
        fn(*args)

@pytest.mark.parametrize("shape", [(4,), (4, 4), (1, 1, 3, 4, 4, 4)])
def test_wrong_rank_refused(shape):
    x = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=f"found {len(shape)} dimensions"):
        dice_coefficient(x, x)
    with pytest.raises(ValueError, match=f"found {len(shape)} dimensions"):
        soft_dice_loss(x, x)

def test_shape_mismatch_and_bad_axis_refused():
    a, b = np.ones((3, 4, 4, 4)), np.ones((3, 4, 4, 5))
    with pytest.raises(ValueError, match="same shape"):
        dice_coefficient(a, b)
    with pytest.raises(ValueError, match="distinct axes"):
        dice_coefficient(a, a, axis=(1, 2, 2))
    with pytest.raises(ValueError, match="distinct axes"):
        dice_coefficient(a, a, axis=(1, 2, 5))
    with pytest.raises(ValueError, match="numeric"):
        dice_coefficient(np.full((3, 4, 4, 4), "a"), a)

# ---------------------------------------------------------------- Keras: compile, fit, save, load

def _tiny_model(dtype=None):
    return keras.Sequential([keras.Input((4, 8, 8, 4)), keras.layers.Permute((2, 3, 4, 1)),
                             keras.layers.Conv3D(3, 1, activation="sigmoid", dtype=dtype),
                             keras.layers.Permute((4, 1, 2, 3), dtype=dtype)])

@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 4, 8, 8, 4)).astype(np.float32)
    y = (rng.random((4, 3, 8, 8, 4)) > 0.7).astype(np.float32)
    return x, y

def test_keras_fit_save_load(tmp_path, xy):
    x, y = xy
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    model.compile(optimizer="adam", loss=soft_dice_loss, metrics=[dice_coefficient, *CLASS_DICE_METRICS])
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "dice_coefficient", "dice_edema", "dice_non_enhancing", "dice_enhancing"}
    assert all(np.isfinite(v[0]) for v in history.history.values())
    before = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    # evaluate on the whole set at once equals our functions on the predictions
    pred = model.predict(x, verbose=0)
    assert before["loss"] == pytest.approx(float(soft_dice_loss(y, pred)), abs=1e-5)
    assert before["dice_edema"] == pytest.approx(np.mean([ref_dice(y[b, 0], pred[b, 0]) for b in range(4)]), abs=1e-5)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)          # no custom_objects: the functions are registered
    after = loaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert after == pytest.approx(before, abs=1e-6)
    assert loaded.loss is soft_dice_loss
    loaded.fit(x, y, batch_size=2, epochs=1, verbose=0)   # and it trains on

def test_keras_mixed_precision(xy):
    x, y = xy
    model = _tiny_model(dtype="mixed_float16")
    assert model(x[:1]).dtype == "float16"
    model.compile(optimizer="adam", loss=soft_dice_loss, metrics=[dice_coefficient, dice_enhancing])
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    pred = model.predict(x, verbose=0)
    got = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert got["dice_coefficient"] == pytest.approx(ref_batch_dice(y, pred.astype(np.float64)), abs=1e-4)

# ---------------------------------------------------------------- properties (hypothesis)

@st.composite
def mask_pairs(draw):
    shape = draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6))
    return draw(hnp.arrays(np.bool_, shape)), draw(hnp.arrays(np.bool_, shape))

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

@PROPS
@given(mask_pairs())
def test_dice_properties_tf(masks):
    a, b = (m.astype(np.float32) for m in masks)
    ab, ba = float(single_class_dice_coefficient(a, b)), float(single_class_dice_coefficient(b, a))
    assert ab == ba
    assert 0.0 <= ab <= 1.0
    assert float(single_class_dice_coefficient(a, a)) == pytest.approx(1.0, abs=1e-6)
    # as one class of a (C, X, Y, Z) sample
    assert float(dice_coefficient(a[None], b[None])) == pytest.approx(ab, abs=1e-6)
    assert 0.0 <= float(soft_dice_loss(a[None], b[None])) <= 1.0
