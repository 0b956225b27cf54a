"Loading cases: layouts, label conventions, and broken or hostile files"
import gzip, tracemalloc

import nibabel as nib
import numpy as np
import pytest

from bts_course.data import LAYOUTS, CaseError, example_patches, load_case, one_hot, read_case, save_nifti
from bts_course.phantom import make_phantom

SHAPE = (20, 18, 12)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    return rng.uniform(1, 900, SHAPE + (4,)).astype(np.float32), rng.integers(0, 4, SHAPE).astype(np.uint8)


def write_msd(root, image, label, name="BRATS_007"):
    save_nifti(image, root / "imagesTr" / f"{name}.nii.gz")
    save_nifti(label, root / "labelsTr" / f"{name}.nii.gz")
    return root / "imagesTr" / f"{name}.nii.gz"


def write_brats(folder, image, label, layout):
    "Write `image`/`label` (course order and codes) in a BraTS layout, with that layout's label codes"
    to_layout = {course: code for code, course in LAYOUTS[layout].label_map.items()}
    for c, suffix in enumerate(LAYOUTS[layout].modality_suffixes):
        save_nifti(image[..., c], folder / f"{folder.name}{suffix}.nii.gz")
    save_nifti(np.vectorize(to_layout.get)(label).astype(np.uint8), folder / f"{folder.name}{LAYOUTS[layout].label_suffix}.nii.gz")
    return folder


@pytest.mark.parametrize("layout", ["brats2021", "brats2023"])
def test_brats_layouts_map_to_course_order_and_codes(tmp_path, arrays, layout):
    image, label = arrays
    case = read_case(write_brats(tmp_path / f"Case-{layout}", image, label, layout))
    assert case.layout == layout
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)


def test_brats2021_edema_and_core_are_swapped_into_course_codes(tmp_path, arrays):
    image, _ = arrays
    folder = tmp_path / "BraTS2021_00002"
    for c, suffix in enumerate(LAYOUTS["brats2021"].modality_suffixes): save_nifti(image[..., c], folder / f"x{suffix}.nii.gz")
    raw = np.zeros(SHAPE, np.uint8); raw[0, 0, 0], raw[1, 0, 0], raw[2, 0, 0] = 1, 2, 4
    save_nifti(raw, folder / "x_seg.nii.gz")
    label = read_case(folder).label
    assert (label[0, 0, 0], label[1, 0, 0], label[2, 0, 0]) == (2, 1, 3)  # core, edema, enhancing


def test_msd_without_labels_and_mac_junk_ignored(tmp_path, arrays):
    image, _ = arrays
    save_nifti(image, tmp_path / "imagesTs" / "BRATS_500.nii.gz")
    (tmp_path / "imagesTs" / "._BRATS_500.nii.gz").write_bytes(b"junk")
    case = read_case(tmp_path / "imagesTs" / "BRATS_500.nii.gz")
    assert case.label is None and case.name == "BRATS_500"


def test_wrong_channel_count_and_rank(tmp_path, arrays):
    image, label = arrays
    path = write_msd(tmp_path, image[..., :3], label)
    with pytest.raises(CaseError, match="4 channels"): read_case(path)
    save_nifti(np.zeros((4, 4, 4, 4, 2), np.float32), tmp_path / "x5.nii.gz")
    with pytest.raises(CaseError, match="3D or 4D"): read_case(tmp_path / "x5.nii.gz")


def test_shape_and_affine_mismatch_name_both_files(tmp_path, arrays):
    image, label = arrays
    path = write_msd(tmp_path, image, label[:, :, :-1])
    with pytest.raises(CaseError, match=r"imagesTr.*labelsTr"): read_case(path)
    shifted = np.eye(4); shifted[0, 3] = 5.0
    save_nifti(label, tmp_path / "labelsTr" / "BRATS_007.nii.gz", affine=shifted)
    with pytest.raises(CaseError, match="different affines"): read_case(path)
    with pytest.raises(CaseError, match="different affines"): load_case(path, tmp_path / "labelsTr" / "BRATS_007.nii.gz")


def test_brats_modalities_must_share_grid(tmp_path, arrays):
    image, label = arrays
    folder = write_brats(tmp_path / "BraTS2021_00003", image, label, "brats2021")
    save_nifti(image[:-1, ..., 2], folder / "BraTS2021_00003_t1ce.nii.gz")
    with pytest.raises(CaseError, match=r"_flair.*_t1ce"): read_case(folder)
    moved = np.eye(4); moved[1, 3] = 2.0
    save_nifti(image[..., 2], folder / "BraTS2021_00003_t1ce.nii.gz", affine=moved)
    with pytest.raises(CaseError, match="different affines"): read_case(folder)


def test_unknown_label_codes(tmp_path, arrays):
    image, label = arrays
    bad = label.copy(); bad[0, 0, 0] = 7
    with pytest.raises(CaseError, match=r"codes \[0, 1, 2, 3, 7\]"): read_case(write_msd(tmp_path, image, bad))


def test_corrupt_and_truncated_gzip(tmp_path, arrays):
    image, label = arrays
    path = write_msd(tmp_path, image, label)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseError, match="BRATS_007"): read_case(path)
    path.write_bytes(data[:20] + bytes(200) + data[220:])
    with pytest.raises(CaseError, match="BRATS_007"): read_case(path)
    path.write_bytes(b"this is not a nifti file at all")
    with pytest.raises(CaseError, match="BRATS_007"): read_case(path)
    with pytest.raises(FileNotFoundError, match="nope"): read_case(tmp_path / "nope.nii.gz")


def test_non_finite_intensities(tmp_path, arrays):
    image, label = arrays
    image = image.copy(); image[0, 0, 0, 1] = np.nan; image[1, 2, 3, 0] = np.inf
    path = write_msd(tmp_path, image, label)
    with pytest.raises(CaseError, match="2 non-finite"): read_case(path)
    case = read_case(path, nonfinite="zero")
    assert case.image[0, 0, 0, 1] == 0 and case.image[1, 2, 3, 0] == 0 and np.isfinite(case.image).all()


def test_huge_header_refused_before_allocation(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000, 4)); header.set_data_dtype(np.float32)
    path = tmp_path / "imagesTr" / "huge.nii.gz"
    path.parent.mkdir()
    with gzip.open(path, "wb") as f: f.write(header.binaryblock + b"\x00" * 4)  # a header and 4 bytes of data
    tracemalloc.start()
    with pytest.raises(CaseError, match="refusing to allocate"): read_case(path)
    _, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
    assert peak < 50e6


def test_loading_memory_stays_under_three_times_the_case(tmp_path):
    case = make_phantom(3, (96, 96, 64))
    path = write_msd(tmp_path, case.image, case.label)
    tracemalloc.start()
    loaded = read_case(path)
    _, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
    assert peak < 3 * loaded.image.nbytes
    np.testing.assert_array_equal(loaded.image, case.image)


def test_phantom_is_deterministic_and_plausible():
    a, b = make_phantom(5, (64, 64, 48)), make_phantom(5, (64, 64, 48))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.dtype == np.float32 and a.label.dtype == np.uint8
    assert (a.image[a.label == 0].min() == 0) and np.isfinite(a.image).all()
    assert ((a.image.max(-1) > 0) | (a.label == 0)).all()  # tumour only inside the head


def test_example_patches_match_course_files():
    import h5py
    from pathlib import Path
    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "course_patches" / "train"
    if not src.is_dir(): pytest.skip("course patches not beside the repository")
    for patch in example_patches():
        with h5py.File(src / patch.name) as f:
            np.testing.assert_allclose(patch.x, f["x"][()], atol=0.5)
            np.testing.assert_array_equal(patch.y, f["y"][()])


def test_one_hot_rejects_out_of_range_codes():
    np.testing.assert_array_equal(one_hot(np.array([0, 3]))[1], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="0..3"): one_hot(np.array([0, 4]))
