"Every `bts` command fails cleanly: non-zero exit, one readable line on stderr, no traceback unless --debug"
import subprocess, sys
from pathlib import Path

import pytest

BTS = str(Path(sys.executable).with_name("bts"))


def run(*args, cwd=None):
    return subprocess.run([BTS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *needles):
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles: assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("junk") / "notes.txt"
    path.write_text("this is not an MRI file, a data set, or a model\n")
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
def test_missing_path(args, tmp_path):
    missing = tmp_path / "does-not-exist"
    result = run(*[a.format(missing=missing, tmp=tmp_path) for a in args])
    assert_one_line_error(result, "does-not-exist")


@pytest.mark.parametrize("args", [
    ["gif", "{junk}", "-o", "{tmp}/x.gif"],
    ["preprocess", "{junk}", "{tmp}/out"],
    ["train", "{junk}", "--out", "{tmp}/run"],
    ["predict", "{junk}", "-o", "{tmp}/p.nii.gz", "--model", "{junk}"],
])
def test_wrong_kind_of_file(args, tmp_path, text_file):
    result = run(*[a.format(junk=text_file, tmp=tmp_path) for a in args])
    assert_one_line_error(result, "notes.txt")


@pytest.mark.parametrize("command", ["demo", "download", "preprocess", "train", "predict", "gif"])
def test_unknown_option(command):
    assert_one_line_error(run(command, "--no-such-option"), "--no-such-option")


def test_debug_shows_traceback(tmp_path):
    result = run("--debug", "gif", tmp_path / "nothing-here", "-o", tmp_path / "x.gif")
    assert result.returncode != 0 and "Traceback" in result.stderr
