"""Dependencies run one way: the library never imports its command line, and the numpy-only modules never load
TensorFlow."""
import re, subprocess, sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bts_course"
LIBRARY = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "_modidx", "cli"))
WITHOUT_TENSORFLOW = ("data", "download", "phantom", "viz", "sampling", "preprocess", "dataset", "scores", "labels", "widgets", "native",
                      "doctor", "lessons")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_library_is_what_we_think():
    assert {"data", "phantom", "viz", "training", "costs", "inference", "evaluation", "widgets", "demo"} <= set(LIBRARY)


@pytest.mark.parametrize("module", LIBRARY)
def test_no_library_module_mentions_the_command_line(module):
    "Not even a lazy import inside a function: the command line sits on top, alone"
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    assert not re.search(r"(from|import)\s+(bts_course)?\.?cli\b|bts_course\.cli|argparse", source), module


def test_importing_every_library_module_does_not_import_the_command_line():
    imports = "; ".join(f"import bts_course.{m}" for m in LIBRARY)
    assert run(f"import sys; {imports}; print('bts_course.cli' in sys.modules)") == "False"


@pytest.mark.parametrize("module", WITHOUT_TENSORFLOW)
def test_numpy_modules_do_not_load_tensorflow(module):
    assert run(f"import sys, bts_course.{module}; print('tensorflow' in sys.modules)") == "False"
