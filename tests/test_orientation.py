"""One orientation for every picture: a single marked voxel lands on the same row and column in the grid, the GIF
frames, `visualize_patch`, `plot_prediction` and the three planes of the `SliceExplorer`, where `voxel_to_pixel` says."""
import numpy as np
import pytest

from bts_course.viz import (AXIS_NAMES, get_labeled_image, gif_frames, plane_slice, plot_image_grid, visualize_patch,
                            voxel_to_pixel)

SHAPE = (20, 24, 12)
VOXEL = (3, 17, 9)  # off every axis' middle, so a flip or a transpose moves it


def red_pixels(picture) -> list:
    "Where a picture (uint8 or float RGB) is red: [(row, col), ...]"
    rgb = np.asarray(picture, np.float64)
    if rgb.max() <= 1: rgb = rgb * 255
    return [tuple(int(v) for v in p) for p in np.argwhere(rgb[..., 0] - rgb[..., 1:].max(-1) > 50)]


@pytest.fixture(scope="module")
def marked():
    "A dark image with a grey head, and one voxel labelled edema (red)"
    image = np.zeros(SHAPE + (4,), np.float32)
    image[2:-2, 2:-2, 2:-2] = 100.0
    label = np.zeros(SHAPE, np.uint8)
    label[VOXEL] = 1
    return image, label


def expected(plane):
    return [voxel_to_pixel(plane, VOXEL, SHAPE)]


def test_the_slicer_and_voxel_to_pixel_agree(marked):
    _, label = marked
    for axis, plane in enumerate(AXIS_NAMES):
        assert [tuple(p) for p in np.argwhere(plane_slice(label, plane, VOXEL[axis]))] == expected(plane)
    # the convention, stated where the slicer is defined: axial rows run along y (anterior, low y, at the top),
    # columns along x (the patient's left, high x, on the right); coronal and sagittal have the top slice (high z) up
    assert expected("axial") == [(VOXEL[1], VOXEL[0])]
    assert expected("coronal") == [(SHAPE[2] - 1 - VOXEL[2], VOXEL[0])]
    assert expected("sagittal") == [(SHAPE[2] - 1 - VOXEL[2], VOXEL[1])]


def test_plot_image_grid(marked):
    image, label = marked
    fig = plot_image_grid(get_labeled_image(image, label, alpha=1), centre=VOXEL, n_slices=1)
    for axis, plane in enumerate(AXIS_NAMES):
        assert red_pixels(fig.axes[axis].images[0].get_array()) == expected(plane), plane


def test_gif_frames(marked):
    image, label = marked
    rgb = get_labeled_image(image, label, alpha=1)
    for axis, plane in enumerate(AXIS_NAMES):
        frames = gif_frames(rgb, axes=(axis,), progress=0)  # one panel, one frame per slice
        assert red_pixels(frames[VOXEL[axis]]) == expected(plane), plane
    both = gif_frames(rgb, progress=0)  # three panels side by side: the axial one last, as in the course
    axial = both[VOXEL[2] * max(SHAPE) // SHAPE[2]]
    width_before = sum(plane_slice(label, a, 0).shape[1] + 2 for a in (0, 1))
    assert [(r, c - width_before) for r, c in red_pixels(axial) if c >= width_before] == expected("axial")


def test_visualize_patch(marked):
    image, label = marked
    X = np.moveaxis(image, -1, 0).copy()
    X[0][VOXEL] = 1000.0
    y = np.stack([label == c for c in (1, 2, 3)]).astype(np.float32)
    fig = visualize_patch(X, y, class_num=0, z=VOXEL[2])
    for ax in fig.axes:
        shown = ax.images[0].get_array()
        assert [tuple(p) for p in np.argwhere(shown == shown.max())] == expected("axial")


def test_plot_prediction(marked):
    from bts_course.evaluation import plot_prediction
    image, label = marked
    fig = plot_prediction(image, label, label, loc=VOXEL)
    for row in range(2):
        for axis, plane in enumerate(AXIS_NAMES):
            assert red_pixels(fig.axes[3 * row + axis].images[0].get_array()) == expected(plane), (row, plane)


def test_slice_explorer(marked):
    from bts_course.widgets import SliceExplorer
    image, label = marked
    ex = SliceExplorer(image, label, position=VOXEL, opacity=1.0)
    ex.crosshair.value = False
    for plane in AXIS_NAMES:
        assert red_pixels(ex.rendered[plane]) == expected(plane), plane
