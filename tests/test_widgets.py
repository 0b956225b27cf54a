"""Drive the slice explorers headlessly: set widget values, check the rendered RGB arrays pixel by pixel."""
import io

import imageio.v3 as iio
import numpy as np
import pytest

from bts_course.data import MODALITIES, Case, example_patches
from bts_course.labels import probabilities_to_labels
from bts_course.phantom import make_phantom
from bts_course.widgets import PatchExplorer, SliceExplorer, compare_codes
from bts_course.viz import plane_slice, voxel_to_pixel

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
    assert frames.shape == (SHAPE[1], SHAPE[2], SHAPE[0], 3)
    meta = iio.immeta(gif)
    assert meta["loop"] == 0 and meta["duration"] == 50
    # each frame is the coronal slice it claims to be, up to the GIF palette
    for j in (0, 9, 23):
        assert np.abs(frames[j].astype(int) - ex.render_plane("coronal", j, crosshair=False)).max() <= 8
    axial = iio.imread(ex.save_gif(tmp_path / "axial.gif", axis=2, step=5), index=None)
    assert axial.shape[0] <= len(range(0, SHAPE[2], 5)) and axial.shape[1:] == (SHAPE[1], SHAPE[0], 3)
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


def test_default_position_is_the_middle_of_the_tumour(coords, label):
    assert SliceExplorer(coords).position == (10, 12, 6)  # no label: the middle of the volume
    # medians of the 12 labelled voxels: x of 2,2,2,3,3,3,3,4,4,4,6,9; y of 2,2,2,3,3,3,4,4,4,4,7,10; z of 5 x3, 8 x9
    assert SliceExplorer(coords, label).position == (3, 3, 8)
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
    ((np.zeros(SHAPE + (4,)), None, np.zeros(SHAPE + (3,))), "threshold probabilities"),
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
