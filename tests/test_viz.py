"Tests of `bts_course.viz`: colour blending, slice grids, GIF layout and files, and the `bts gif` command"
import subprocess, sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bts_course import viz
from bts_course.cli import main
from bts_course.data import CLASS_COLORS, save_nifti
from bts_course.phantom import make_phantom
from bts_course.viz import (add_progress_bar, display_window, gif_frames, get_labeled_image, grid_slices, plane_slice,
                            plot_image_grid, save_gif, scale_to_unit, scroll_indices, tumour_centre, visualize_data_gif,
                            visualize_patch, write_gif)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=3, shape=(40, 36, 24))


@pytest.fixture(scope="module")
def rgb(phantom):
    return get_labeled_image(phantom.image, phantom.label)


def tiny_case():
    "A 2x2x2 image with FLAIR 0..7 (other channels noise) and one voxel of each label code"
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 100, (2, 2, 2, 4)).astype(np.float32)
    image[..., 0] = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    label = np.zeros((2, 2, 2), np.uint8)
    label[0, 0, 1], label[0, 1, 0], label[1, 0, 0] = 1, 2, 3
    return image, label


def frame_count(path) -> int:
    return iio.imread(path, index=None).shape[0]


# ---------------------------------------------------------------- colours

@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_blend_values(alpha):
    image, label = tiny_case()
    out = get_labeled_image(image, label, alpha=alpha)
    grey = np.arange(8, dtype=np.float32).reshape(2, 2, 2) / 7
    assert out.dtype == np.float32 and out.shape == (2, 2, 2, 3)
    for idx in np.ndindex(2, 2, 2):
        k = label[idx]
        expected = [grey[idx]] * 3 if k == 0 else (1 - alpha) * grey[idx] + alpha * np.array(CLASS_COLORS[k])
        np.testing.assert_allclose(out[idx], expected, atol=1e-6)
    np.testing.assert_array_equal(out[0, 0, 0], [0, 0, 0])  # the darkest voxel is black


def test_course_colours_at_alpha_one(phantom):
    out = get_labeled_image(phantom.image, phantom.label, alpha=1)
    for k, colour in CLASS_COLORS.items():
        np.testing.assert_array_equal(out[phantom.label == k], np.broadcast_to(colour, ((phantom.label == k).sum(), 3)))
    healthy = out[phantom.label == 0]
    np.testing.assert_array_equal(healthy[:, 0], healthy[:, 1])  # grey elsewhere


def test_percentile_clips_outliers():
    v = np.zeros((10, 10, 10), np.float32)
    v[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    v[5, 5, 5] = 1e6
    plain, robust = scale_to_unit(v), scale_to_unit(v, percentile=99)
    assert plain[3, 3, 3] < 1e-3 and robust[3, 3, 3] > 0.05
    assert robust.max() == 1 and robust[0, 0, 0] == 0
    lohi = scale_to_unit(v, percentile=(10, 90))
    assert lohi[2, 2, 2] == 0 and lohi[0, 0, 0] == 0 and lohi[5, 5, 5] == 1
    np.testing.assert_array_equal(scale_to_unit(np.full((3, 3, 3), 5.0)), 0)  # constant: zeros, no division by 0


def test_display_window_is_the_window_scale_to_unit_maps():
    rng = np.random.default_rng(4)
    v = np.zeros((30, 30, 30), np.float32)
    v[5:25, 5:25, 5:25] = rng.uniform(100, 200, (20, 20, 20))
    v[10, 10, 10] = 1e5
    for percentile in (None, 99, (1, 99), (0.5, 99.5)):
        lo, hi = display_window(v, percentile)
        expected = np.clip((v - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(scale_to_unit(v, percentile), expected, atol=1e-6)
    assert display_window(v) == (0.0, 1e5)
    lo, hi = display_window(v, (1, 99))
    assert 100 < lo < 103 and 197 < hi < 200  # the zeros and the hot voxel set neither end
    assert display_window(v, 99)[0] == 0.0  # one number: the minimum stays black
    # a strided sample: about max_samples voxels, nearly the same window
    sampled = display_window(v, (1, 99), max_samples=v.size // 27)
    assert abs(sampled[0] - lo) < 2 and abs(sampled[1] - hi) < 2
    assert display_window(np.full((4, 4), 3.0), (1, 99)) == (3.0, 3.0)  # no foreground


@pytest.mark.parametrize("bad, message", [
    (np.array(["a"]), "real-valued"), (np.zeros(0), "non-empty"), (np.array([1.0, np.nan]), "non-finite"),
])
def test_display_window_errors(bad, message):
    with pytest.raises((TypeError, ValueError), match=message): display_window(bad)
    with pytest.raises(ValueError, match="percentile"): display_window(np.ones(3), (50, 10))


def test_one_hot_label_accepted(phantom, rgb):
    one_hot = np.eye(4, dtype=np.float32)[phantom.label]
    np.testing.assert_array_equal(get_labeled_image(phantom.image, one_hot), rgb)


@pytest.mark.parametrize("make, message", [
    (lambda i, l: (i[..., :3], l), "(X, Y, Z, 4)"),
    (lambda i, l: (i[0], l), "(X, Y, Z, 4)"),
    (lambda i, l: (i, l[:, :, :1]), "label has shape"),
    (lambda i, l: (i, np.where(l == 3, 4, l)), "BraTS 2018-2021"),
    (lambda i, l: (i, l.astype(np.float32) + 0.5), "expected integer codes"),
    (lambda i, l: (i, l.astype(np.int16) - 1), "codes {-1"),
    (lambda i, l: (np.concatenate([np.full_like(i[..., :1], np.nan), i[..., 1:]], -1), l), "non-finite"),
])
def test_get_labeled_image_errors(make, message):
    image, label = make(*tiny_case())
    with pytest.raises((ValueError, TypeError)) as e: get_labeled_image(image, label)
    assert message in str(e.value)


def test_alpha_out_of_range():
    with pytest.raises(ValueError, match="alpha"): get_labeled_image(*tiny_case(), alpha=-0.1)


# ---------------------------------------------------------------- centre and grid

def test_tumour_centre(phantom, rgb):
    mask = phantom.label > 0
    expected = tuple(int(round(float(np.mean(ix)))) for ix in np.nonzero(mask))
    assert tumour_centre(label=phantom.label) == expected
    assert tumour_centre(rgb) == expected  # found from the colours alone
    no_tumour = get_labeled_image(phantom.image, np.zeros_like(phantom.label))
    head = tuple(int(round(float(np.mean(ix)))) for ix in np.nonzero(viz._to_uint8(no_tumour).any(-1)))
    assert tumour_centre(no_tumour) == head


def test_plot_image_grid_default_and_random(rgb):
    centre = tumour_centre(rgb)
    fig = plot_image_grid(rgb, n_slices=3)
    assert len(fig.axes) == 9
    assert [fig.axes[3 * a + 1].get_title() for a in range(3)] == \
        [f"sagittal x={centre[0]}", f"coronal y={centre[1]}", f"axial z={centre[2]}"]
    # the middle panel of the axial row is the slice through the centre, cut by the package's one slicer
    shown = fig.axes[7].images[0].get_array()
    np.testing.assert_array_equal(shown, viz.plane_slice(viz._to_uint8(rgb), "axial", centre[2]))
    titles = lambda f: [a.get_title() for a in f.axes]
    assert titles(plot_image_grid(rgb, random=True, rng=7)) == titles(plot_image_grid(rgb, random=True, rng=7))
    assert titles(plot_image_grid(rgb, centre=(0, 0, 0), n_slices=2, spacing=4))[:2] == ["sagittal x=0", "sagittal x=4"]


def test_grid_slices_stay_inside():
    for c in range(0, 30):
        for s in grid_slices((30, 30, 30), (c, c, c), n_slices=5, spacing=3):
            assert s.min() >= 0 and s.max() < 30 and len(set(s.tolist())) == 5


# ---------------------------------------------------------------- GIF frames

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=3))
def test_scroll_indices_properties(sizes):
    sched = scroll_indices(sizes)
    assert sched.shape == (max(sizes), len(sizes))
    for k, size in enumerate(sizes):
        col = sched[:, k]
        assert col[0] == 0 and col[-1] == size - 1  # all start and finish together
        assert set(np.diff(col).tolist()) <= {0, 1}  # in order, no slice skipped
        assert len(np.unique(col)) == size  # every slice shown


@pytest.mark.parametrize("shape", [(12, 9, 5), (5, 12, 9), (9, 5, 12)])
def test_side_by_side_layout(shape):
    "Each panel holds exactly the slice `scroll_indices` names, whichever axis is longest"
    vol = np.random.default_rng(1).integers(1, 255, shape + (3,), dtype=np.uint8)
    gap, bar = 3, 2
    frames = gif_frames(vol, gap=gap, progress=bar)
    panels = [plane_slice(vol, a, 0).shape[:2] for a in range(3)]
    height = max(h for h, _ in panels)
    width = sum(w for _, w in panels) + 2 * gap
    assert frames.shape == (max(shape), height + bar + 1, width, 3) and frames.dtype == np.uint8
    sched = scroll_indices(shape)
    for i in (0, len(frames) // 2, len(frames) - 1):
        x0 = 0
        for a, (h, w) in enumerate(panels):
            top = (height - h) // 2
            np.testing.assert_array_equal(frames[i, top:top + h, x0:x0 + w], plane_slice(vol, a, sched[i, a]))
            assert not frames[i, :top, x0:x0 + w].any() and not frames[i, top + h:height, x0:x0 + w].any()
            if a < 2: assert not frames[i, :height, x0 + w:x0 + w + gap].any()  # black gap
            x0 += w + gap
    filled = (frames[:, height + 1:, :, 0] == 160).sum((1, 2))
    assert filled[-1] == width * bar and (np.diff(filled) > 0).all()  # progress bar grows every frame


@pytest.mark.parametrize("shape, axis", [((50, 4, 3), 0), ((3, 60, 2), 1), ((2, 3, 40), 2)])
def test_frames_distinct_when_narrow(shape, axis, tmp_path):
    "A GIF with more frames than pixels across still keeps one frame per slice (the bar grows taller)"
    vol = np.zeros(shape, np.float32)  # all black: only the bar tells frames apart
    frames = gif_frames(vol, axes=(axis,))
    assert all((a != b).any() for a, b in zip(frames[:-1], frames[1:], strict=True))
    assert frame_count(save_gif(vol, tmp_path / "n.gif", axis=axis)) == shape[axis]


def test_identical_frames_are_refused_not_merged(tmp_path):
    "The trap of 01_explore: Pillow merges identical neighbouring frames; write_gif refuses them, add_progress_bar parts them"
    black = np.zeros((5, 6, 7, 3), np.uint8)
    with pytest.raises(ValueError, match="frames 0 and 1 are identical"):
        write_gif(black, tmp_path / "merged.gif")
    assert list(tmp_path.iterdir()) == []
    barred = add_progress_bar(black)
    assert barred.shape == (5, 6 + 1 + 2, 7, 3) and not barred[:, :6].any()
    back = iio.imread(write_gif(barred, tmp_path / "kept.gif", duration=0.05), index=None)
    assert back.shape[0] == 5 and iio.immeta(tmp_path / "kept.gif")["duration"] == 50
    with pytest.raises(ValueError, match="uint8"): write_gif(black.astype(np.float32), tmp_path / "f.gif")
    with pytest.raises(ValueError, match="uint8"): add_progress_bar(black[0])
    with pytest.raises(ValueError, match=">= 0"): add_progress_bar(black, rows=-1)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(1, 3))
def test_progress_bar_parts_every_frame(n, width, rows):
    barred = add_progress_bar(np.zeros((n, 2, width, 3), np.uint8), rows)
    bar = (barred[:, 3:, :, 0] == 160).sum((1, 2))
    assert (np.diff(bar) > 0).all() and bar[-1] == (barred.shape[1] - 3) * width  # grows every frame, full at the end


def test_grey_and_bool_volumes():
    grey = np.linspace(0, 1, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    f = gif_frames(grey, axes=(2,), progress=0)
    assert f.shape == (6, 5, 4, 3)
    np.testing.assert_array_equal(f[..., 0], f[..., 2])
    assert gif_frames(grey > 0.5, axes=(0,), progress=0).max() == 255
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"): gif_frames(grey * 10)
    with pytest.raises(ValueError, match="axes"): gif_frames(grey, axes=(0, 0))


# ---------------------------------------------------------------- GIF files

def test_visualize_data_gif_file(rgb, tmp_path):
    path = visualize_data_gif(rgb, tmp_path / "sub" / "a.gif", duration=0.05)
    assert path == tmp_path / "sub" / "a.gif"
    back = iio.imread(path, index=None)
    expected = gif_frames(rgb)
    assert back.shape[:3] == expected.shape[:3] == (40, 36 + 3, 36 + 2 + 40 + 2 + 40)
    assert np.abs(back[..., :3].astype(int) - expected).max() <= 8  # only palette quantisation
    meta = iio.immeta(path)
    assert meta["loop"] == 0 and meta["duration"] == 50
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.gif"]  # no temporary file left


def test_visualize_data_gif_temp_path(rgb):
    path = visualize_data_gif(rgb[:, :, :8], show=False)
    try:
        assert path.suffix == ".gif" and frame_count(path) == 40
    finally:
        path.unlink()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_save_gif_per_axis(rgb, tmp_path, axis):
    path = save_gif(rgb, tmp_path / f"{axis}.gif", axis=axis, duration=0.2)
    back = iio.imread(path, index=None)
    h, w = np.rot90(np.take(rgb, 0, axis=axis)).shape[:2]
    assert back.shape[:3] == (rgb.shape[axis], h + 3, w)
    assert iio.immeta(path)["duration"] == 200


def test_failed_write_leaves_nothing(rgb, tmp_path, monkeypatch):
    target = tmp_path / "keep.gif"
    target.write_bytes(b"old")
    def broken(path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(iio, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"): save_gif(rgb, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.gif"]
    with pytest.raises(ValueError, match="duration"): save_gif(rgb, tmp_path / "b.gif", duration=0)


# ---------------------------------------------------------------- patches

def test_visualize_patch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 16, 12, 6)).astype(np.float32)
    y = np.zeros((3, 16, 12, 6), np.float32)
    y[1, 2:5, 3:9, 4] = 1
    y[1, 2:4, 3:4, 1] = 1
    fig = visualize_patch(X, y, class_num=1, channel=3)
    assert [a.get_title() for a in fig.axes] == ["T2w, z=4", "Non-Enhancing Tumor, z=4"]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), plane_slice(X[3], "axial", 4))
    assert fig.axes[1].images[0].get_array().sum() == 18
    assert visualize_patch(X, y, class_num=1, z=1).axes[1].images[0].get_array().sum() == 2
    with pytest.raises(ValueError, match="spatial shape"): visualize_patch(X, y[:, :8])
    with pytest.raises(ValueError, match="z=9"): visualize_patch(X, y, z=9)


# ---------------------------------------------------------------- bts gif

@pytest.fixture(scope="module")
def msd_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("msd") / "Task01_BrainTumour"
    case = make_phantom(seed=5, shape=(32, 28, 20))
    image = save_nifti(case.image, root / "imagesTr" / "BRATS_777.nii.gz", case.affine)
    save_nifti(case.label, root / "labelsTr" / "BRATS_777.nii.gz", case.affine)
    return image, case


def test_bts_gif_msd(msd_case, tmp_path, capsys):
    image_file, case = msd_case
    out = tmp_path / "out.gif"
    assert main(["gif", str(image_file), "-o", str(out), "--duration", "0.04"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    back = iio.imread(out, index=None)
    assert back.shape[:3] == (32, 28 + 3, 28 + 2 + 32 + 2 + 32)
    assert iio.immeta(out)["duration"] == 40 and iio.immeta(out)["loop"] == 0
    expected = gif_frames(get_labeled_image(case.image, case.label))
    assert np.abs(back[..., :3].astype(int) - expected).max() <= 8  # the label was read and painted


@pytest.mark.parametrize("axis, index", [("x", 0), ("y", 1), ("z", 2)])
def test_bts_gif_one_axis(msd_case, tmp_path, axis, index, capsys):
    out = tmp_path / f"{axis}.gif"
    assert main(["gif", str(msd_case[0]), "-o", str(out), "--axis", axis]) == 0
    assert frame_count(out) == (32, 28, 20)[index]


def test_bts_gif_brats2021_folder(tmp_path, capsys):
    case = make_phantom(seed=2, shape=(24, 24, 16))
    folder = tmp_path / "BraTS2021_00001"
    for c, suffix in enumerate(("_flair", "_t1", "_t1ce", "_t2")):
        save_nifti(case.image[..., c], folder / f"{folder.name}{suffix}.nii.gz", case.affine)
    seg = np.select([case.label == 1, case.label == 2, case.label == 3], [2, 1, 4], 0).astype(np.uint8)
    save_nifti(seg, folder / f"{folder.name}_seg.nii.gz", case.affine)
    out = tmp_path / "b.gif"
    assert main(["gif", str(folder), "-o", str(out), "--axis", "z", "--alpha", "1"]) == 0
    expected = gif_frames(get_labeled_image(case.image, case.label, alpha=1), axes=(2,))
    back = iio.imread(out, index=None)
    assert back.shape[:3] == expected.shape[:3] and np.abs(back[..., :3].astype(int) - expected).max() <= 8


def test_bts_gif_default_output_name(msd_case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["gif", str(msd_case[0]), "--axis", "z"]) == 0
    assert capsys.readouterr().out.strip() == "BRATS_777.gif" and frame_count(tmp_path / "BRATS_777.gif") == 20


@pytest.mark.parametrize("argv, code, message", [
    (["gif"], 2, "give either a CASE path or --phantom"),
    (["gif", "x.nii.gz", "--phantom", "1"], 2, "give either a CASE path or --phantom"),
    (["gif", "--phantom", "1", "-o", "out.png"], 2, "must end with .gif"),
    (["gif", "--phantom", "1", "--duration", "0"], 2, "--duration"),
    (["gif", "--phantom", "1", "--axis", "w"], 2, "invalid choice"),
])
def test_bts_gif_usage_errors(argv, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bts_gif_missing_case_subprocess(tmp_path):
    "The installed `bts` script: a missing case is one line on stderr naming it, and a non-zero exit code"
    bts = Path(sys.executable).parent / "bts"
    missing = tmp_path / "nowhere" / "BRATS_001.nii.gz"
    r = subprocess.run([str(bts), "gif", str(missing), "-o", str(tmp_path / "x.gif")], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "no such file" in lines[0]
    assert not (tmp_path / "x.gif").exists()
