"""Tests of `bts_course.preprocess`: standardisation, whole-scan normalisation and cropping, the patch data set."""
import json, os, re, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from bts_course.cli import main
from bts_course.data import CaseError, example_patches, read_case, save_nifti
from bts_course.phantom import make_phantom
from bts_course.dataset import build_patch_dataset
from bts_course.preprocess import crop_to_brain, normalize_nonzero, standardize, uncrop_from_brain
from bts_course.dataset import _split
from bts_course.data import find_cases

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
    config = json.loads((COURSE_PATCHES / "config.json").read_text())
    names = config["train"] + config["valid"]
    assert len(names) == 20 and not set(config["train"]) & set(config["valid"])
    for name in names[::4]:
        with h5py.File(COURSE_PATCHES / "train" / name, "r") as f:
            x, y = f["x"][()], f["y"][()]
        assert x.shape == (4, 160, 160, 16) and y.shape == (160, 160, 16, 4)
        np.testing.assert_array_equal(y.sum(-1), 1)
        assert y[..., 0].mean() <= 0.95  # the course's own patches meet its threshold
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


# --- the patch data set ----------------------------------------------------------------------------

def write_msd(root, names_seeds, shape=(96, 96, 64), label=True):
    "Phantom cases as an MSD folder; `names_seeds` maps a case name to a phantom seed"
    root = Path(root)
    made = {}
    for name, seed in names_seeds.items():
        if seed not in made:
            c = make_phantom(seed, shape=shape)
            made[seed] = (save_nifti(c.image, root / "imagesTr" / f"{name}.nii.gz", c.affine),
                          save_nifti(c.label, root / "labelsTr" / f"{name}.nii.gz", c.affine) if label else None)
        else:
            shutil.copy(made[seed][0], root / "imagesTr" / f"{name}.nii.gz")
            if label: shutil.copy(made[seed][1], root / "labelsTr" / f"{name}.nii.gz")
    (root / "imagesTr" / "._BRATS_000.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    return root


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    return write_msd(tmp_path_factory.mktemp("src") / "Task01_BrainTumour", {f"BRATS_{i:03d}": i % 3 for i in range(5)})


def patch_files(dest):
    return sorted(p.name for p in Path(dest).glob("*.h5"))


def check_dataset(dest, n_patches):
    "Every patch opens and has the course's format; config.json lists exactly the files on disk"
    dest = Path(dest)
    config = json.loads((dest / "config.json").read_text())
    listed = config["train"] + config["valid"]
    assert sorted(listed) == patch_files(dest) and len(listed) == n_patches
    assert not list(dest.glob(".*.partial*"))
    for name in listed:
        with h5py.File(dest / name, "r") as f:
            x, y = f["x"][()], f["y"][()]
        assert x.shape == (4,) + SIZE and x.dtype == np.float32
        assert y.shape == SIZE + (4,) and y.dtype == np.float32
        np.testing.assert_array_equal(y.sum(-1), 1)
        assert y[..., 0].mean() <= 0.95
    return config


def test_build_format_split_and_content(msd, tmp_path):
    dest = build_patch_dataset(msd, tmp_path / "out", patches_per_case=3, valid_fraction=0.4, seed=1, workers=1,
                               size=SIZE, progress=False)
    config = check_dataset(dest, 15)
    case_of = lambda f: f.split(".nii.gz_")[0]
    train, valid = {case_of(f) for f in config["train"]}, {case_of(f) for f in config["valid"]}
    assert len(valid) == 2 and len(train) == 3 and not train & valid  # split by case, never by patch
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["seed"] == 1
    assert all(r["status"] == "done" and len(r["files"]) == 3 for r in manifest["cases"].values())
    # content: raw intensities channels first and the one-hot label with background, at the named corner
    name = config["train"][0]
    case, _, *corner = re.fullmatch(r"(.+)_(\d+)_x(-?\d+)_y(-?\d+)_z(-?\d+)\.h5", name).groups()
    cx, cy, cz = map(int, corner)
    original = read_case(msd / "imagesTr" / case)
    box = (slice(cx, cx + SIZE[0]), slice(cy, cy + SIZE[1]), slice(cz, cz + SIZE[2]))
    with h5py.File(dest / name, "r") as f:
        np.testing.assert_array_equal(f["x"][()], np.moveaxis(original.image[box], -1, 0))
        np.testing.assert_array_equal(f["y"][()].argmax(-1), original.label[box])


def test_build_is_deterministic_whatever_the_workers(msd, tmp_path):
    a = build_patch_dataset(msd, tmp_path / "a", patches_per_case=2, seed=3, workers=1, size=SIZE, progress=False)
    b = build_patch_dataset(msd, tmp_path / "b", patches_per_case=2, seed=3, workers=2, size=SIZE, progress=False)
    assert patch_files(a) == patch_files(b)
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    c = build_patch_dataset(msd, tmp_path / "c", patches_per_case=2, seed=4, workers=1, size=SIZE, progress=False)
    assert patch_files(a) != patch_files(c)


def test_split_edges():
    names = [f"c{i}" for i in range(10)]
    assert list(_split(names, 0.2, 0).values()).count("valid") == 2
    assert list(_split(names, 0.0, 0).values()).count("valid") == 0
    assert list(_split(names, 1.0, 0).values()).count("valid") == 10
    assert list(_split(names, 0.01, 0).values()).count("valid") == 1  # at least one validation case
    assert list(_split(names, 0.99, 0).values()).count("valid") == 9  # and at least one training case
    assert _split(names, 0.3, 5) == _split(names, 0.3, 5) != _split(names, 0.3, 6)


def test_resume_skips_done_cases_and_cleans_up(msd, tmp_path):
    dest = build_patch_dataset(msd, tmp_path / "out", patches_per_case=2, workers=1, size=SIZE, progress=False)
    files = patch_files(dest)
    # simulate an interrupted rerun: one case unfinished, its files half there, a temporary file, an orphan
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["cases"]["BRATS_002.nii.gz"]["status"] = "pending"
    manifest["complete"] = False
    (dest / "manifest.json").write_text(json.dumps(manifest))
    (dest / "BRATS_002.nii.gz_9_x0_y0_z0.h5").write_bytes(b"orphan of an interrupted attempt")
    (dest / ".BRATS_002.nii.gz_1_x3_y3_z3.h5.partial999").write_bytes(b"half-written")
    untouched = {f: (dest / f).stat().st_mtime_ns for f in files if not f.startswith("BRATS_002")}
    build_patch_dataset(msd, dest, patches_per_case=2, workers=1, size=SIZE, progress=False)
    assert patch_files(dest) == files
    assert {f: (dest / f).stat().st_mtime_ns for f in untouched} == untouched  # finished cases were skipped
    check_dataset(dest, 10)
    (dest / files[0]).unlink()  # a missing file makes its case redo
    build_patch_dataset(msd, dest, patches_per_case=2, workers=1, size=SIZE, progress=False)
    assert patch_files(dest) == files


def test_resume_refuses_other_settings_or_cases(msd, tmp_path):
    dest = build_patch_dataset(msd, tmp_path / "out", patches_per_case=1, workers=1, size=SIZE, progress=False)
    with pytest.raises(ValueError, match=r"seed=0 \(now 9\)"):
        build_patch_dataset(msd, dest, patches_per_case=1, seed=9, size=SIZE, progress=False)
    more = write_msd(tmp_path / "more", {f"BRATS_{i:03d}": 0 for i in range(6)}, shape=(64, 64, 48))
    with pytest.raises(ValueError, match="1 new"):
        build_patch_dataset(more, dest, patches_per_case=1, size=SIZE, progress=False)


def test_unlabelled_and_hopeless_cases_name_the_case(tmp_path):
    src = write_msd(tmp_path / "msd", {"BRATS_000": 0, "BRATS_001": 1})
    (src / "labelsTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(CaseError, match="BRATS_001.nii.gz"):
        build_patch_dataset(src, tmp_path / "out", size=SIZE, progress=False)
    c = make_phantom(0, shape=(96, 96, 64))
    save_nifti(np.zeros_like(c.label), src / "labelsTr" / "BRATS_001.nii.gz", c.affine)  # no tumour at all
    with pytest.raises(CaseError, match="case BRATS_001.nii.gz .*best achievable is 100.00%"):
        build_patch_dataset(src, tmp_path / "out2", workers=2, size=SIZE, progress=False)


def test_brats_folders(tmp_path):
    "BraTS 2018-2021 case folders (enhancing coded 4) cut into course-coded patches named after the folder"
    c = make_phantom(2, shape=(96, 96, 64))
    to_brats = np.array([0, 2, 1, 4], np.uint8)  # course code -> BraTS 2021 code
    for name in ("BraTS2021_00000", "BraTS2021_00001"):
        folder = tmp_path / "brats" / name
        for suffix, channel in zip(("_flair", "_t1", "_t1ce", "_t2"), range(4), strict=True):
            save_nifti(c.image[..., channel], folder / f"{name}{suffix}.nii.gz", c.affine)
        save_nifti(to_brats[c.label], folder / f"{name}_seg.nii.gz", c.affine)
    assert [p.name for p in find_cases(tmp_path / "brats")] == ["BraTS2021_00000", "BraTS2021_00001"]
    dest = build_patch_dataset(tmp_path / "brats", tmp_path / "out", patches_per_case=2, size=SIZE, progress=False)
    config = check_dataset(dest, 4)
    assert all(f.startswith("BraTS2021_0000") for f in config["train"] + config["valid"])
    assert len(config["valid"]) == 2 and len(config["train"]) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX record locks")
def test_a_second_build_on_the_same_folder_is_refused(msd, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(dest / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="another build is writing"):
            build_patch_dataset(msd, dest, size=SIZE, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not patch_files(dest)


def test_find_cases_layouts(msd, tmp_path):
    names = [p.name for p in find_cases(msd)]
    assert names == [f"BRATS_{i:03d}.nii.gz" for i in range(5)]  # the ._ file is skipped
    assert find_cases(msd.parent) == find_cases(msd) == find_cases(msd / "imagesTr")
    with pytest.raises(FileNotFoundError):
        find_cases(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="no cases found"):
        find_cases(tmp_path / "empty")


def test_build_validates_arguments(msd, tmp_path):
    for kwargs, message in [(dict(patches_per_case=0), "patches_per_case"), (dict(valid_fraction=1.5), "valid_fraction"),
                            (dict(workers=0), "workers"), (dict(size=(64, 64)), "size"),
                            (dict(background_threshold=2), "background_threshold")]:
        with pytest.raises(ValueError, match=message):
            build_patch_dataset(msd, tmp_path / "out", progress=False, **kwargs)


# --- the command line, and a hard kill mid-run ------------------------------------------------------

def bts_command():
    script = Path(sys.executable).parent / "bts"
    if script.exists(): return [str(script)]
    return [sys.executable, "-c", "import sys; from bts_course.cli import main; sys.exit(main())"]


def test_cli(msd, tmp_path, capsys):
    assert main(["preprocess", str(msd), str(tmp_path / "out"), "--patches-per-case", "2", "--patch-size", *map(str, SIZE),
                 "--valid-fraction", "0.2", "--seed", "1", "--workers", "2", "--background-threshold", "0.96", "--quiet"]) == 0
    assert "8 training and 2 validation patches" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["background_threshold"] == 0.96 and manifest["settings"]["size"] == list(SIZE)
    assert main(["preprocess", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 1
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["preprocess", str(msd), str(tmp_path / "a_file")]) == 1
    assert main(["preprocess", str(tmp_path / "a_file"), str(tmp_path / "o5")]) == 1
    assert main(["preprocess", str(msd), str(tmp_path / "o3"), "--patch-size", "64", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "no such file" in err[0] and "is not a folder" in err[1]
    assert "no cases found" in err[2] and "--patch-size" in err[3]
    result = subprocess.run(bts_command() + ["preprocess", str(msd), str(tmp_path / "o4"), "--no-such-option"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_sigkill_of_the_process_group_mid_run_then_resume(tmp_path):
    "Kill `bts preprocess` and all its workers with SIGKILL once some output exists; the rerun leaves a consistent data set"
    src = write_msd(tmp_path / "msd", {f"BRATS_{i:03d}": i % 2 for i in range(12)})
    dest = tmp_path / "out"
    args = ["preprocess", str(src), str(dest), "--patches-per-case", "3", "--patch-size", *map(str, SIZE),
            "--workers", "2", "--quiet"]
    proc = subprocess.Popen(bts_command() + args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(dest.glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the build ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            try: os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError: pass
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (dest / "config.json").exists()  # an interrupted build has no config.json to mislead a trainer
    manifest = json.loads((dest / "manifest.json").read_text())
    assert sum(r["status"] == "done" for r in manifest["cases"].values()) < 12
    assert main(args) == 0
    check_dataset(dest, 36)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["complete"] and all(r["status"] == "done" for r in manifest["cases"].values())
