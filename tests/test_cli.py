"""Every `bts` command fails cleanly: non-zero exit, one readable line on stderr, no traceback unless --debug.

Most cases call `main` in this process (`here`), so the library is imported once per worker rather than once per case;
a few run the real `bts` executable (`run`), where the native libraries' start-up lines would show on stderr."""
import subprocess, sys
from pathlib import Path

import pytest

from bts_course.cli import main

BTS = str(Path(sys.executable).with_name("bts"))


def run(*args, cwd=None):
    return subprocess.run([BTS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def here(capsys):
    "`here(*args)`: `bts ARGS` through `main` in this process, as a `CompletedProcess`"
    def call(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)
    return call


def assert_one_line_error(result, *needles):
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles: assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("junk") / "notes.txt"
    path.write_text("this is not an MRI file, a data set, or a model\n", encoding="utf-8")
    return path


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    for name in ("demo", "download", "preprocess", "train", "predict", "gif"): assert name in result.stdout


@pytest.mark.parametrize("args", [
    ["gif", "{missing}", "-o", "{tmp}/x.gif"],
    ["preprocess", "{missing}", "{tmp}/out"],
    ["train", "{missing}", "--out", "{tmp}/run"],
    ["predict", "{missing}", "-o", "{tmp}/p.nii.gz", "--model", "{missing}"],
])
def test_missing_path(args, tmp_path, here):
    missing = tmp_path / "does-not-exist"
    result = here(*[a.format(missing=missing, tmp=tmp_path) for a in args])
    assert_one_line_error(result, "does-not-exist")


@pytest.mark.parametrize("args", [
    ["gif", "{junk}", "-o", "{tmp}/x.gif"],
    ["preprocess", "{junk}", "{tmp}/out"],
    ["train", "{junk}", "--out", "{tmp}/run"],
    ["predict", "{junk}", "-o", "{tmp}/p.nii.gz", "--model", "{junk}"],
])
def test_wrong_kind_of_file(args, tmp_path, text_file, here):
    result = here(*[a.format(junk=text_file, tmp=tmp_path) for a in args])
    assert_one_line_error(result, "notes.txt")


@pytest.mark.parametrize("command", ["demo", "download", "preprocess", "train", "gif"])
def test_unknown_option(command, here):
    assert_one_line_error(here(command, "--no-such-option"), "--no-such-option")


def test_unknown_option_in_the_real_command():
    "The executable, which imports TensorFlow for `predict`: still one line, none of TensorFlow's start-up lines"
    assert_one_line_error(run("predict", "--no-such-option"), "--no-such-option")


def test_debug_shows_traceback(tmp_path):
    result = run("--debug", "gif", tmp_path / "nothing-here", "-o", tmp_path / "x.gif")
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    "Two small phantom cases in the MSD layout, and their names as a split file names them"
    from bts_course.data import case_file_name, find_cases, save_nifti
    from bts_course.phantom import make_phantom
    root = tmp_path_factory.mktemp("cases")
    for seed in (1, 2):
        case = make_phantom(seed, (48, 48, 32))
        save_nifti(case.image, root / "imagesTr" / f"BRATS_{seed:03d}.nii.gz")
        save_nifti(case.label, root / "labelsTr" / f"BRATS_{seed:03d}.nii.gz")
    return root, [case_file_name(p) for p in find_cases(root)]


@pytest.mark.parametrize("split, needle", [
    ({"train": ["{0}", "{1}"], "valid": ["{1}"]}, "is listed twice"),
    ({"train": ["{0}"], "valid": ["{1}", "Brats18_NOT_HERE_1"]}, "in the split but not found, e.g. Brats18_NOT_HERE_1"),
])
def test_a_bad_split_is_one_line_before_any_work(split, needle, two_cases, tmp_path, here):
    import json
    root, names = two_cases
    path = tmp_path / "split.json"
    path.write_text(json.dumps({side: [n.format(*names) for n in cases] for side, cases in split.items()}), encoding="utf-8")
    result = here("preprocess", root, tmp_path / "patches", "--split", path, "--patches-per-case", "2", "--patch-size", "32", "32", "16")
    assert_one_line_error(result, "split.json", needle)
    assert not (tmp_path / "patches").exists()
