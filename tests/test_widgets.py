"""Drive the slice explorers headlessly: set widget values, check the rendered RGB arrays pixel by pixel."""
import io

import imageio.v3 as iio
import numpy as np
import pytest

from bts_course.data import MODALITIES, Case, example_patches
from bts_course.labels import probabilities_to_labels
from bts_course.phantom import make_phantom
from bts_course.widgets import PatchExplorer, SliceExplorer, compare_codes
from bts_course.viz import plane_slice, tumour_centre, voxel_to_pixel

SHAPE = (20, 24, 12)
RED, GREEN, BLUE = [255, 0, 0], [0, 255, 0], [0, 0, 255]
YELLOW, MAGENTA, CYAN, ORANGE = [255, 255, 0], [255, 0, 255], [0, 255, 255], [255, 153, 0]


@pytest.fixture
def coords():
    "Image whose channels hold the voxel's own x, y and z (and a constant 7), so grey levels tell where a pixel came from"
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    return np.stack([x, y, z, np.full(SHAPE, 7, np.float32)], axis=-1)


@pytest.fixture
def label():
    lab = np.zeros(SHAPE, np.uint8)
    lab[3, 4, 5], lab[6, 7, 5], lab[9, 10, 5] = 1, 2, 3
    lab[2:5, 2:5, 8] = 1
    return lab


def plain(ex, modality, window=(0, 255)):
    "Grey-only drawing of `modality` with a window that maps the coordinate channels one-to-one onto grey levels"
    with ex.hold():
        ex.modality.value = modality
        ex.window.min, ex.window.max = 0, 255
        ex.window.value = window
        ex.opacity.value = 0.0
        ex.crosshair.value = False


def test_planes_show_the_right_slice(coords):
    ex = SliceExplorer(coords)
    plain(ex, 2)  # channel 2 holds z
    ex.sliders["axial"].value = 4
    assert ex.rendered["axial"].shape == (SHAPE[1], SHAPE[0], 3)
    assert (ex.rendered["axial"] == 4).all()
    # coronal and sagittal: rows run from the top slice (z = 11) down to z = 0
    for plane in ("coronal", "sagittal"):
        rows = ex.rendered[plane][:, 0, 0]
        np.testing.assert_array_equal(rows, np.arange(SHAPE[2])[::-1])
    plain(ex, 0)  # channel 0 holds x: the axial and coronal columns run along x
    np.testing.assert_array_equal(ex.rendered["axial"][0, :, 0], np.arange(SHAPE[0]))
    np.testing.assert_array_equal(ex.rendered["coronal"][0, :, 0], np.arange(SHAPE[0]))
    ex.sliders["sagittal"].value = 13
    assert (ex.rendered["sagittal"] == 13).all()
    plain(ex, 1)  # channel 1 holds y: axial rows and sagittal columns run along y
    np.testing.assert_array_equal(ex.rendered["axial"][:, 0, 0], np.arange(SHAPE[1]))
    np.testing.assert_array_equal(ex.rendered["sagittal"][0, :, 0], np.arange(SHAPE[1]))
    ex.sliders["coronal"].value = 17
    assert (ex.rendered["coronal"] == 17).all()
    assert ex.position == (13, 17, 4)


def test_moving_one_slider_moves_the_crosshair_in_the_others(coords):
    ex = SliceExplorer(coords, position=(5, 6, 7))
    plain(ex, 3)  # constant channel: everything but the crosshair is one grey
    ex.crosshair.value = True
    before = {p: a.copy() for p, a in ex.rendered.items()}
    ex.sliders["axial"].value = 2  # z 7 -> 2
    assert ex.active_plane == "axial"
    for plane in ("coronal", "sagittal"):
        old_row = voxel_to_pixel(plane, (5, 6, 7), SHAPE)[0]
        new_row = voxel_to_pixel(plane, (5, 6, 2), SHAPE)[0]
        assert (before[plane][old_row, 0] == ORANGE).all() and (ex.rendered[plane][old_row, 0] != ORANGE).any()
        assert (ex.rendered[plane][new_row, 0] == ORANGE).all()
        changed_rows = np.nonzero((before[plane] != ex.rendered[plane]).any(axis=(1, 2)))[0]
        near = lambda row: set(range(row - 2, row + 3))  # the crosshair's gap moved along with its centre
        assert {old_row, new_row} <= set(changed_rows) <= near(old_row) | near(new_row)
    # the axial view's own crosshair marks x and y, which did not change
    np.testing.assert_array_equal(before["axial"], ex.rendered["axial"])
    # the pixel at the crosshair centre is left uncovered
    r, c = voxel_to_pixel("axial", ex.position, SHAPE)
    assert (ex.rendered["axial"][r, c] == 7).all()  # window 0-255: intensity 7 is grey 7
    assert (ex.rendered["axial"][r, 0] == ORANGE).all() and (ex.rendered["axial"][0, c] == ORANGE).all()


def test_class_colours_at_known_voxels_and_toggles(coords, label):
    ex = SliceExplorer(coords, label, position=(0, 0, 5), opacity=1.0, modality=3)  # a constant channel
    ex.crosshair.value = False
    axial = ex.rendered["axial"]
    assert axial[voxel_to_pixel("axial", (3, 4, 5), SHAPE)].tolist() == RED
    assert axial[voxel_to_pixel("axial", (6, 7, 5), SHAPE)].tolist() == GREEN
    assert axial[voxel_to_pixel("axial", (9, 10, 5), SHAPE)].tolist() == BLUE
    ex.class_toggles[2].value = False
    axial = ex.rendered["axial"]
    assert not np.all(axial == GREEN, axis=-1).any()
    assert np.all(axial == RED, axis=-1).sum() == 1 and np.all(axial == BLUE, axis=-1).sum() == 1
    assert axial[voxel_to_pixel("axial", (6, 7, 5), SHAPE)].tolist() == axial[0, 0].tolist()  # plain grey there
    plain(ex, 3, window=(0, 17))  # intensity 7 becomes grey 7 * 255 / 17 = 105
    with ex.hold(): ex.opacity.value, ex.class_toggles[2].value = 0.5, True
    r, c = voxel_to_pixel("axial", (3, 4, 5), SHAPE)
    grey = int(ex.rendered["axial"][0, 0, 1])
    assert grey == 105
    assert ex.rendered["axial"][r, c].tolist() == [int((grey + 255) / 2 + 0.5), int(grey / 2 + 0.5), int(grey / 2 + 0.5)]
    ex.sliders["axial"].value = 8  # the edema square
    assert np.all(ex.rendered["axial"] == [int((grey + 255) / 2 + 0.5), int(grey / 2 + 0.5), int(grey / 2 + 0.5)],
                  axis=-1).sum() == 9


def test_compare_mode_colours(coords, label):
    pred = label.copy()
    pred[3, 4, 5] = 0      # edema missed: false negative
    pred[0, 0, 5] = 1      # edema where there is none: false positive
    pred[9, 10, 5] = 2     # enhancing called non-enhancing: false positive
    ex = SliceExplorer(coords, label, pred, position=(15, 20, 5), opacity=1.0)
    assert ex.mode.options == ("truth", "prediction", "compare") and ex.mode.value == "compare"
    ex.crosshair.value = False
    px = lambda v: ex.rendered["axial"][voxel_to_pixel("axial", v, SHAPE)].tolist()
    assert px((3, 4, 5)) == CYAN and px((0, 0, 5)) == MAGENTA and px((6, 7, 5)) == YELLOW
    assert px((9, 10, 5)) == MAGENTA
    ex.class_toggles[2].value = False  # only edema and enhancing compared: the enhancing voxel is now missed
    assert px((9, 10, 5)) == CYAN and px((6, 7, 5)) != YELLOW
    ex.mode.value = "prediction"
    ex.class_toggles[2].value = True
    assert px((9, 10, 5)) == GREEN and px((0, 0, 5)) == RED
    ex.mode.value = "truth"
    assert px((9, 10, 5)) == BLUE
    assert ex._dice == {1: 2 * 9 / (10 + 10), 2: 2 / 3, 3: 0.0}


def test_compare_codes_agrees_with_definitions():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 4, 1000), rng.integers(0, 4, 1000)
    got = compare_codes(truth, pred)
    np.testing.assert_array_equal(got == 1, (truth > 0) & (truth == pred))
    np.testing.assert_array_equal(got == 2, (pred > 0) & (truth != pred))
    np.testing.assert_array_equal(got == 3, (truth > 0) & (pred == 0))


def test_window_level_clips(coords):
    ex = SliceExplorer(coords, position=(0, 0, 0))
    plain(ex, 0, window=(5, 10))  # x channel through window 5-10
    row = ex.rendered["axial"][0, :, 0].astype(int)
    expected = np.clip((np.arange(SHAPE[0]) - 5) * 255 / 5, 0, 255).round().astype(int)
    np.testing.assert_array_equal(row, expected)
    assert (row[:6] == 0).all() and (row[10:] == 255).all()


def test_each_modality_keeps_its_own_window():
    case = make_phantom(0, shape=(48, 48, 32))
    ex = SliceExplorer(case)
    assert [b[0] for b in ex.modality.options] == list(MODALITIES)
    default_t1gd = ex.windows[2]
    ex.window.value = (10.0, 200.0)
    ex.modality.value = 2
    np.testing.assert_allclose(ex.window.value, default_t1gd, rtol=1e-6)
    assert (ex.window.min, ex.window.max) == pytest.approx(ex.ranges[2])
    ex.modality.value = 0
    np.testing.assert_allclose(ex.window.value, (10.0, 200.0))
    gray = plane_slice(case.image[..., 0], "axial", ex.position[2])
    r, c = np.unravel_index(np.argmax(gray), gray.shape)
    with ex.hold(): ex.opacity.value, ex.crosshair.value = 0.0, False
    assert (ex.rendered["axial"][r, c] == 255).all()


def test_widget_images_hold_the_rendered_pngs(coords, label):
    ex = SliceExplorer(Case(coords, label, np.eye(4), "coords"), position=(10, 12, 6))
    assert ex.name == "coords" and ex.label is not None
    for plane, image in ex.images.items():
        np.testing.assert_array_equal(iio.imread(io.BytesIO(image.value), extension=".png"), ex.rendered[plane])
    old = bytes(ex.images["axial"].value)
    ex.sliders["axial"].value = 8  # the slice with the edema square
    assert bytes(ex.images["axial"].value) != old
    assert "voxel (x, y, z) = (10, 12, 8)" in ex.info.value


def test_save_png_and_gif(tmp_path, coords, label):
    ex = SliceExplorer(coords, label, position=(3, 4, 5), modality=1)  # y channel: every coronal slice differs
    png = ex.save_png(tmp_path / "sub" / "view.png", scale=2)
    back = iio.imread(png)
    np.testing.assert_array_equal(back, ex.render(scale=2))
    gap = 4
    assert back.shape == (2 * SHAPE[1], 2 * (SHAPE[0] + SHAPE[0] + SHAPE[1]) + 2 * gap, 3)
    np.testing.assert_array_equal(back[:2 * SHAPE[1], :2 * SHAPE[0]][::2, ::2], ex.rendered["axial"])
    ex.window.value = (0, 23)  # y 0-23 onto distinct grey levels
    ex.sliders["coronal"].value = 9  # coronal is now the plane moved last
    gif = ex.save_gif(tmp_path / "coronal.gif", duration=0.05)
    frames = iio.imread(gif, index=None)
    assert frames.shape == (SHAPE[1], SHAPE[2] + 3, SHAPE[0], 3)  # one frame per slice, over a progress bar 2 rows high
    meta = iio.immeta(gif)
    assert meta["loop"] == 0 and meta["duration"] == 50
    # each frame is the coronal slice it claims to be, up to the GIF palette
    for j in (0, 9, 23):
        assert np.abs(frames[j, :SHAPE[2]].astype(int) - ex.render_plane("coronal", j, crosshair=False)).max() <= 8
    axial = iio.imread(ex.save_gif(tmp_path / "axial.gif", axis=2, step=5), index=None)
    assert axial.shape == (len(range(0, SHAPE[2], 5)), SHAPE[1] + 3, SHAPE[0], 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axial.gif", "coronal.gif", "sub"]


def test_failed_export_leaves_nothing(tmp_path, coords, monkeypatch):
    ex = SliceExplorer(coords)

    def broken(path, *args, **kwargs):
        open(path, "wb").write(b"GIF89a half")
        raise OSError("disk full")
    monkeypatch.setattr(iio, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        ex.save_gif(tmp_path / "x.gif")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="plane must be one of"):
        ex.save_gif(tmp_path / "x.gif", axis="transverse")


def test_patch_explorer_on_real_patches():
    patch = example_patches()[1]
    X, y = patch.x, np.moveaxis(patch.y, -1, 0)[1:]
    pe = PatchExplorer(X, y, opacity=1.0)
    np.testing.assert_array_equal(pe.label, patch.label)
    assert pe.image.shape == (160, 160, 16, 4) and pe.rendered["sagittal"].shape == (16, 160, 3)
    np.testing.assert_array_equal(pe.image[..., 2], X[2])
    pe.crosshair.value = False
    for code, colour in [(1, RED), (2, GREEN), (3, BLUE)]:
        voxel = tuple(np.argwhere(patch.label == code)[0])
        pe.position = voxel
        assert pe.rendered["axial"][voxel_to_pixel("axial", voxel, patch.label.shape)].tolist() == colour
    np.testing.assert_array_equal(PatchExplorer.from_patch(patch).label, patch.label)
    # a probability prediction goes through the threshold
    probs = y * 0.8
    edema = tuple(np.argwhere(patch.label == 1)[0])
    probs[(0,) + edema] = 0.3
    pe = PatchExplorer(X, y, probs)
    assert pe.mode.value == "compare" and pe.prediction[edema] == 0 and pe.label[edema] == 1
    assert (pe.prediction != pe.label).sum() == 1
    np.testing.assert_array_equal(PatchExplorer(X, np.moveaxis(patch.y, -1, 0)).label, patch.label)


def test_patch_explorer_labels_by_the_package_rule():
    # the voxel: edema 0.8 and enhancing 0.6 both pass 0.5; the innermost class (enhancing, 3) wins,
    # as in evaluate_case and bts predict (an argmax would have said edema, 1)
    y = np.zeros((3, 4, 4, 4), np.float32)
    y[:, 0, 0, 0] = [0.8, 0.3, 0.6]
    y[:, 1, 0, 0] = [0.2, 0.7, 0.6]
    y[:, 2, 0, 0] = [0.4, 0.1, 0.3]
    X = np.ones((4, 4, 4, 4), np.float32)
    pe = PatchExplorer(X, prediction=y)
    np.testing.assert_array_equal(pe.prediction[:3, 0, 0], [3, 3, 0])
    np.testing.assert_array_equal(PatchExplorer(X, prediction=y, threshold=0.3).prediction[:3, 0, 0], [3, 3, 1])
    np.testing.assert_array_equal(pe.prediction, probabilities_to_labels(y, axis=0))
    with pytest.raises(ValueError, match="found 2"):
        PatchExplorer(X, prediction=np.zeros((2, 4, 4, 4)))


def test_default_position_is_the_tumours_centre(coords, label):
    assert SliceExplorer(coords).position == (10, 12, 6)  # no label: the middle of the volume
    # the package's one rule, viz.tumour_centre: the centre of mass of the 12 labelled voxels,
    # x (2,2,2,3,3,3,3,4,4,4,6,9) / 12 = 3.75, y (2,2,2,3,3,3,4,4,4,4,7,10) / 12 = 4, z (5 x3, 8 x9) / 12 = 7.25
    assert SliceExplorer(coords, label).position == tumour_centre(label=label) == (4, 4, 7)
    only_pred = np.zeros(SHAPE, np.uint8)
    only_pred[15, 1, 2] = 3
    assert SliceExplorer(coords, np.zeros(SHAPE, np.uint8), only_pred).position == (15, 1, 2)


def test_overlay_controls_follow_what_is_given(coords, label):
    ex = SliceExplorer(coords)
    assert ex.mode.value == "none" and ex.mode.disabled and ex.opacity.disabled
    assert ex._legend() == ""
    ex = SliceExplorer(coords, prediction=label)
    assert ex.mode.options == ("prediction",)
    single = SliceExplorer(coords[..., 0])
    assert single.channel_names == ("channel 0",)


@pytest.mark.parametrize("args, message", [
    ((np.zeros((4, 20, 20, 12)),), "channels-first"),
    ((np.zeros(SHAPE + (4,)), np.zeros((20, 24, 11))), r"label has shape \(20, 24, 11\); expected \(20, 24, 12\)"),
    ((np.zeros(SHAPE + (4,)), np.full(SHAPE, 4)), "read_case maps it to 3"),
    ((np.zeros(SHAPE + (4,)), None, np.full(SHAPE, 0.5)), "prediction has codes"),
    ((np.zeros(SHAPE + (4,)), np.zeros(SHAPE + (3,))), "threshold probabilities"),  # a label must be codes
    ((np.zeros(SHAPE + (4,)), None, np.zeros(SHAPE + (2,))), "found 2 channels"),
    ((np.full(SHAPE + (4,), np.inf),), "non-finite"),
])
def test_bad_input_is_refused_clearly(args, message):
    with pytest.raises(ValueError, match=message):
        SliceExplorer(*args)


def test_bad_positions_and_modalities(coords):
    with pytest.raises(ValueError, match="position y=30 is outside 0..23"):
        SliceExplorer(coords, position=(1, 30, 1))
    with pytest.raises(ValueError, match="modality 'DWI' not in"):
        SliceExplorer(coords, modality="DWI")
    assert SliceExplorer(coords, modality="T1gd").modality.value == 2
    with pytest.raises(ValueError, match="X must be a channels-first patch"):
        PatchExplorer(coords[..., 0], None)
    with pytest.raises(ValueError, match="y covers"):
        PatchExplorer(np.zeros((4, 8, 8, 4)), np.zeros((3, 8, 8, 5)))


# ---------------------------------------------------------------- probabilities, thresholds, uncertainty

@pytest.fixture
def probs(label):
    "Class probabilities (X, Y, Z, 3): 0.9 on the labelled class, 0.6 edema on the voxels next to the edema square, 0.1 elsewhere"
    p = np.full(SHAPE + (3,), 0.1, np.float32)
    for code in (1, 2, 3): p[label == code, code - 1] = 0.9
    p[5, 2:5, 8, 0] = 0.6  # a rim that a threshold between 0.6 and 0.9 takes away
    return p


def test_threshold_slider_relabels_and_the_compare_view_and_dice_follow(coords, label, probs):
    ex = SliceExplorer(coords, label, probs, position=(5, 3, 8), opacity=1.0)
    ex.crosshair.value = False
    assert ex.mode.value == "compare" and ex.threshold == 0.5 and len(ex.thresholds) == 1
    np.testing.assert_array_equal(ex.prediction, probabilities_to_labels(probs, 0.5))
    px = lambda v: ex.rendered["axial"][voxel_to_pixel("axial", v, SHAPE)].tolist()
    assert px((5, 3, 8)) == MAGENTA and ex._dice[1] == pytest.approx(2 * 10 / (13 + 10))  # the rim: false positives
    assert "voxels predicted at threshold 0.50: Edema 13 · Non-Enhancing Tumor 1 · Enhancing Tumor 1" in ex.legend.value
    old_png = bytes(ex.images["axial"].value)
    ex.thresholds[0].value = 0.7  # what dragging the slider does
    assert px((5, 3, 8)) != MAGENTA and ex._dice == {1: 1.0, 2: 1.0, 3: 1.0}
    assert bytes(ex.images["axial"].value) != old_png
    assert "at threshold 0.70: Edema 10 ·" in ex.legend.value and "Edema 1.000" in ex.legend.value
    ex.mode.value = "prediction"
    assert len(set(px((5, 3, 8)))) == 1  # plain grey: no longer predicted
    assert repr(ex).endswith("mode='prediction', threshold=0.7)")


def test_threshold_ends_and_flat_probabilities(coords, label, probs):
    ex = SliceExplorer(coords, label, probs)
    ex.threshold = 1.0  # nothing exceeds 1
    assert ex.prediction.max() == 0 and ex._dice == {1: 0.0, 2: 0.0, 3: 0.0}
    ex.threshold = 0.0  # every positive probability exceeds 0: the innermost class wins everywhere
    assert (ex.prediction == 3).all() and ex._counts == {1: 0, 2: 0, 3: int(np.prod(SHAPE))}
    flat = SliceExplorer(coords, prediction=np.full(SHAPE + (3,), 0.5, np.float32))
    assert flat.prediction.max() == 0 and flat.mode.options == ("prediction",)
    empty = probs.copy()
    empty[..., 1] = 0  # no non-enhancing tumour predicted, and none in this truth
    truth = np.where(label == 2, 0, label)
    assert SliceExplorer(coords, truth, empty)._dice[2] == 1.0


def test_per_class_thresholds(coords, label, probs):
    ex = SliceExplorer(coords, label, probs, threshold=[0.7, 0.5, 0.95])
    assert [s.description for s in ex.thresholds] == ["Edema", "Non-Enhancing Tumor", "Enhancing Tumor"]
    assert ex.threshold == (0.7, 0.5, 0.95)
    expected = np.zeros(SHAPE, np.uint8)
    for code, t in zip((1, 2, 3), ex.threshold, strict=True): expected[probs[..., code - 1] > t] = code
    np.testing.assert_array_equal(ex.prediction, expected)
    assert ex.prediction[9, 10, 5] == 0  # enhancing 0.9 does not pass its 0.95
    with ex.hold():
        ex.thresholds[2].value = 0.5
        ex.thresholds[0].value = 0.5
    assert ex.prediction[9, 10, 5] == 3 and ex.prediction[5, 3, 8] == 1
    ex.threshold = (0.5, 0.5, 0.5)
    np.testing.assert_array_equal(ex.prediction, probabilities_to_labels(probs, 0.5))
    with pytest.raises(ValueError, match=r"3 threshold slider\(s\); got 1"): ex.threshold = 0.5


@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold=1.5), r"threshold must lie in \[0, 1\]"),
    (dict(threshold=-0.01), r"threshold must lie in \[0, 1\]"),
    (dict(threshold=float("nan")), r"threshold must lie in \[0, 1\]"),
    (dict(threshold=[0.5, 0.5]), r"threshold must be one number or 3 \(one per class"),
    (dict(threshold=[0.5] * 4), r"threshold must be one number or 3 .*got \[0.5, 0.5, 0.5, 0.5\]"),
    (dict(threshold="high"), r"threshold must be numbers in \[0, 1\]"),
    (dict(threshold=[0.5] * 3, label_mode="argmax"), "per-class thresholds need label_mode='threshold'"),
    (dict(label_mode="softmax"), "label_mode must be 'threshold' or 'argmax'"),
    (dict(prediction=np.full(SHAPE + (3,), 1.2)), r"values from 1.2 to 1.2; expected probabilities in \[0, 1\]"),
    (dict(prediction=np.full(SHAPE + (3,), -3.0)), r"expected probabilities in \[0, 1\] \(logits\? apply a sigmoid first\)"),
    (dict(prediction=np.where(np.arange(3) == 1, np.nan, np.zeros(SHAPE + (3,)))), "prediction: holds NaN; expected probabilities in \\[0, 1\\]"),
    (dict(prediction=np.zeros((20, 24, 11, 3))), r"prediction covers \(20, 24, 11\) voxels"),
    (dict(uncertainty=np.full(SHAPE, 0.6)), r"uncertainty has values in \[0.6, 0.6\]; expected \[0, 0.5\]"),
    (dict(uncertainty=np.full(SHAPE, np.nan)), "uncertainty holds 5,760 NaN"),
    (dict(uncertainty=np.zeros(SHAPE + (4,))), r"expected \(20, 24, 12\) \(one value per voxel\) or \(20, 24, 12, 3\)"),
    (dict(uncertainty=np.zeros(SHAPE), uncertainty_max=0), "uncertainty_max must be a positive number"),
])
def test_bad_probabilities_thresholds_and_uncertainty(coords, kwargs, message):
    kwargs = dict(prediction=np.zeros(SHAPE + (3,), np.float32)) | kwargs
    with pytest.raises(ValueError, match=message):
        SliceExplorer(coords, **kwargs)


def test_four_channel_softmax_and_argmax(coords, label, probs):
    softmax = np.concatenate([1 - probs.max(-1, keepdims=True), probs], axis=-1) / 2  # background first, sums < 1
    ex = SliceExplorer(coords, label, softmax, label_mode="argmax")
    np.testing.assert_array_equal(ex.prediction, probabilities_to_labels(softmax, mode="argmax"))
    assert ex.thresholds[0].disabled  # argmax over four channels uses no threshold
    assert "the most probable of four channels" in ex.legend.value
    ex3 = SliceExplorer(coords, label, probs, label_mode="argmax", threshold=0.7)
    np.testing.assert_array_equal(ex3.prediction, probabilities_to_labels(probs, 0.7, mode="argmax"))


def test_uncertainty_heat_map(coords, label, probs):
    u = np.zeros(SHAPE, np.float32)
    u[15, 20, 5] = 0.5  # one very uncertain voxel away from the tumour
    ex = SliceExplorer(coords, label, probs, uncertainty=u, position=(15, 20, 5), opacity=0.0, modality=3)
    ex.crosshair.value = False
    hot, cool = voxel_to_pixel("axial", (15, 20, 5), SHAPE), voxel_to_pixel("axial", (1, 1, 5), SHAPE)
    assert ex.show_uncertainty.value and not ex.show_uncertainty.disabled
    grey = ex.rendered["axial"][cool].tolist()
    with ex.hold(): ex.uncertainty_opacity.value = 1.0
    top = np.round(np.array(matplotlib_inferno_top()) * 255).astype(int).tolist()
    assert ex.rendered["axial"][hot].tolist() == top  # full heat, full opacity: the top colour of 'inferno'
    assert ex.rendered["axial"][cool].tolist() == grey  # certain: plain grey
    ex.show_uncertainty.value = False
    assert ex.rendered["axial"][hot].tolist() == grey
    assert "uncertainty 0.500" in ex.info.value and "p = 0.10 / 0.10 / 0.10" in ex.info.value
    # per class: the largest uncertainty among the classes switched on
    per_class = np.zeros(SHAPE + (3,), np.float32)
    per_class[15, 20, 5] = [0.0, 0.5, 0.0]
    ex = SliceExplorer(coords, label, probs, uncertainty=per_class, position=(15, 20, 5), opacity=0.0,
                       uncertainty_opacity=1.0, modality=3)
    ex.crosshair.value = False
    assert ex.rendered["axial"][hot].tolist() == top
    ex.class_toggles[2].value = False
    assert ex.rendered["axial"][hot].tolist() == grey
    assert SliceExplorer(coords).show_uncertainty.disabled  # without a map: nothing to show


def matplotlib_inferno_top():
    from matplotlib import colormaps
    return colormaps["inferno"](1.0)[:3]


def test_still_picture_is_the_view(coords, label, probs):
    ex = SliceExplorer(coords, label, probs)
    still = ex.still(scale=2)
    np.testing.assert_array_equal(iio.imread(io.BytesIO(still.data), extension=".png"), ex.render(scale=2))


def test_gif_keeps_one_frame_per_slice_even_where_slices_are_alike(tmp_path):
    "The fix: the export goes through viz.write_gif with a progress bar, so identical slices are not merged"
    image = np.zeros((6, 5, 10, 1), np.float32)
    image[..., 4:6, 0] = 1.0  # axial slices 0-3 and 6-9 are identical (black)
    ex = SliceExplorer(image)
    ex.crosshair.value = False
    frames = iio.imread(ex.save_gif(tmp_path / "axial.gif", axis="axial", duration=0.05), index=None)
    assert frames.shape == (10, 5 + 3, 6, 3)
    assert all((a != b).any() for a, b in zip(frames[:-1], frames[1:], strict=True))
    with pytest.raises(ValueError, match="frames 0 and 1 are identical"):
        ex.save_gif(tmp_path / "merged.gif", axis="axial", progress=0)
    with pytest.raises(ValueError, match="duration"):
        ex.save_gif(tmp_path / "fast.gif", duration=0.001)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axial.gif"]


def test_patch_explorer_with_probabilities_and_uncertainty():
    patch = example_patches()[1]
    X, y = patch.x, np.moveaxis(patch.y, -1, 0)[1:]
    probs = (y * 0.8).astype(np.float32)
    spread = np.zeros((3,) + X.shape[1:], np.float32)
    spread[0, 10, 20, 3] = 0.25
    pe = PatchExplorer(X, y, probs, uncertainty=spread)
    assert pe.probabilities.shape == X.shape[1:] + (3,) and pe.uncertainty.shape == X.shape[1:] + (3,)
    assert pe.uncertainty[10, 20, 3, 0] == 0.25
    np.testing.assert_array_equal(pe.prediction, pe.label)  # 0.8 passes 0.5
    pe.threshold = 0.85
    assert pe.prediction.max() == 0 and pe._dice == {1: 0.0, 2: 0.0, 3: 0.0}
    pe = PatchExplorer(X, y, probs, threshold=[0.9, 0.5, 0.5])  # edema needs more than 0.8
    assert (pe.prediction == 1).sum() == 0 and (pe.prediction == 3).sum() == (patch.label == 3).sum()
    np.testing.assert_array_equal(pe.label, patch.label)  # the truth at the same thresholds: 0/1 either way
    with pytest.raises(ValueError, match="prediction must be class channels"):
        PatchExplorer(X, y, probs[0])
    with pytest.raises(ValueError, match=r"expected probabilities in \[0, 1\]"):
        PatchExplorer(X, y, probs * 2)
