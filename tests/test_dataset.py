"""Tests of `bts_course.dataset`: the patch data set, `bts preprocess`, and a hard kill mid-run."""
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bts_course.cli import main
from bts_course.data import CaseError, find_cases, read_case, save_nifti
from bts_course.dataset import build_patch_dataset, split_cases
from bts_course.phantom import make_phantom
from bts_course.sampling import BACKGROUND_THRESHOLD

SIZE = (64, 64, 16)


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
    config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    listed = config["train"] + config["valid"]
    assert sorted(listed) == patch_files(dest) and len(listed) == n_patches
    assert not list(dest.glob(".*.partial*"))
    for name in listed:
        with h5py.File(dest / name, "r") as f:
            x, y = f["x"][()], f["y"][()]
        assert x.shape == (4,) + SIZE and x.dtype == np.float32
        assert y.shape == SIZE + (4,) and y.dtype == np.float32
        np.testing.assert_array_equal(y.sum(-1), 1)
        assert y[..., 0].mean() <= BACKGROUND_THRESHOLD
    return config


def test_build_format_split_and_content(msd, tmp_path):
    dest = build_patch_dataset(msd, tmp_path / "out", patches_per_case=3, valid_fraction=0.4, seed=1, workers=1,
                               patch_size=SIZE, progress=False)
    config = check_dataset(dest, 15)
    case_of = lambda f: f.split(".nii.gz_")[0]
    train, valid = {case_of(f) for f in config["train"]}, {case_of(f) for f in config["valid"]}
    assert len(valid) == 2 and len(train) == 3 and not train & valid  # split by case, never by patch
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
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
    a = build_patch_dataset(msd, tmp_path / "a", patches_per_case=2, seed=3, workers=1, patch_size=SIZE, progress=False)
    b = build_patch_dataset(msd, tmp_path / "b", patches_per_case=2, seed=3, workers=2, patch_size=SIZE, progress=False)
    assert patch_files(a) == patch_files(b)
    assert json.loads((a / "config.json").read_text(encoding="utf-8")) == json.loads((b / "config.json").read_text(encoding="utf-8"))
    c = build_patch_dataset(msd, tmp_path / "c", patches_per_case=2, seed=4, workers=1, patch_size=SIZE, progress=False)
    assert patch_files(a) != patch_files(c)


def test_split_edges():
    names = [f"c{i}" for i in range(10)]
    assert list(split_cases(names, 0.2, 0).values()).count("valid") == 2
    assert list(split_cases(names, 0.0, 0).values()).count("valid") == 0
    assert list(split_cases(names, 1.0, 0).values()).count("valid") == 10
    assert list(split_cases(names, 0.01, 0).values()).count("valid") == 1  # at least one validation case
    assert list(split_cases(names, 0.99, 0).values()).count("valid") == 9  # and at least one training case
    assert split_cases(names, 0.3, 5) == split_cases(names, 0.3, 5) != split_cases(names, 0.3, 6)


def test_resume_skips_done_cases_and_cleans_up(msd, tmp_path):
    dest = build_patch_dataset(msd, tmp_path / "out", patches_per_case=2, workers=1, patch_size=SIZE, progress=False)
    files = patch_files(dest)
    # simulate an interrupted rerun: one case unfinished, its files half there, a temporary file, an orphan
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    manifest["cases"]["BRATS_002.nii.gz"]["status"] = "pending"
    manifest["complete"] = False
    (dest / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (dest / "BRATS_002.nii.gz_9_x0_y0_z0.h5").write_bytes(b"orphan of an interrupted attempt")
    (dest / ".BRATS_002.nii.gz_1_x3_y3_z3.h5.partial999").write_bytes(b"half-written")
    untouched = {f: (dest / f).stat().st_mtime_ns for f in files if not f.startswith("BRATS_002")}
    build_patch_dataset(msd, dest, patches_per_case=2, workers=1, patch_size=SIZE, progress=False)
    assert patch_files(dest) == files
    assert {f: (dest / f).stat().st_mtime_ns for f in untouched} == untouched  # finished cases were skipped
    check_dataset(dest, 10)
    (dest / files[0]).unlink()  # a missing file makes its case redo
    build_patch_dataset(msd, dest, patches_per_case=2, workers=1, patch_size=SIZE, progress=False)
    assert patch_files(dest) == files


def test_resume_refuses_other_settings_or_cases(msd, tmp_path):
    dest = build_patch_dataset(msd, tmp_path / "out", patches_per_case=1, workers=1, patch_size=SIZE, progress=False)
    with pytest.raises(ValueError, match=r"seed=0 \(now 9\)"):
        build_patch_dataset(msd, dest, patches_per_case=1, seed=9, patch_size=SIZE, progress=False)
    more = write_msd(tmp_path / "more", {f"BRATS_{i:03d}": 0 for i in range(6)}, shape=(64, 64, 48))
    with pytest.raises(ValueError, match="1 new"):
        build_patch_dataset(more, dest, patches_per_case=1, patch_size=SIZE, progress=False)


def test_unlabelled_and_hopeless_cases_name_the_case(tmp_path):
    src = write_msd(tmp_path / "msd", {"BRATS_000": 0, "BRATS_001": 1})
    (src / "labelsTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(CaseError, match="BRATS_001.nii.gz"):
        build_patch_dataset(src, tmp_path / "out", patch_size=SIZE, progress=False)
    c = make_phantom(0, shape=(96, 96, 64))
    save_nifti(np.zeros_like(c.label), src / "labelsTr" / "BRATS_001.nii.gz", c.affine)  # no tumour at all
    with pytest.raises(CaseError, match="case BRATS_001.nii.gz .*best achievable is 100.00%"):
        build_patch_dataset(src, tmp_path / "out2", workers=2, patch_size=SIZE, progress=False)


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
    dest = build_patch_dataset(tmp_path / "brats", tmp_path / "out", patches_per_case=2, patch_size=SIZE, progress=False)
    config = check_dataset(dest, 4)
    assert all(f.startswith("BraTS2021_0000") for f in config["train"] + config["valid"])
    assert len(config["valid"]) == 2 and len(config["train"]) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX record locks")
def test_a_second_build_on_the_same_folder_is_refused(msd, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a', encoding='utf-8'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(dest / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="another build is writing"):
            build_patch_dataset(msd, dest, patch_size=SIZE, progress=False)
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
                            (dict(workers=0), "workers"), (dict(patch_size=(64, 64)), "patch_size"),
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
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["background_threshold"] == 0.96 and manifest["settings"]["patch_size"] == list(SIZE)
    assert main(["preprocess", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 1
    (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
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
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert sum(r["status"] == "done" for r in manifest["cases"].values()) < 12
    assert main(args) == 0
    check_dataset(dest, 36)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["complete"] and all(r["status"] == "done" for r in manifest["cases"].values())
