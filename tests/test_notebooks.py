"""Committed notebook outputs show what the notebook computed, not the machine it ran on.

Every notebook in `nbs/` is scanned for machine noise in its saved outputs -- TensorFlow's C++ start-up
banner, TensorFlow / absl log lines, temporary paths (`/tmp/tmp...`, `/tmp/pytest...`), HTTP server log
timestamps -- with the rules `docs/execute_notebooks.py` applies when it saves outputs (`NOISE`,
`machine_noise`): one rule in one place. A failure names the notebook, the cell and the line. The cure
is in the notebook (print a name relative to a folder, silence a request log), then
`.venv/bin/python docs/execute_notebooks.py nbs/NAME.ipynb`.
"""
from __future__ import annotations

import importlib.util, json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NBS = REPO / "nbs"


def _execute_notebooks():
    spec = importlib.util.spec_from_file_location("execute_notebooks", REPO / "docs" / "execute_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EXECUTE = _execute_notebooks()
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts))


def notebook(*cells) -> dict:
    "A notebook dict of code cells, each `(source, [outputs])`"
    return {"cells": [{"cell_type": "code", "source": src, "outputs": outs, "metadata": {}, "execution_count": None}
                      for src, outs in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def stream(text: str, name: str = "stderr") -> dict:
    return {"output_type": "stream", "name": name, "text": text.splitlines(keepends=True)}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_noise_in_saved_outputs(nb):
    noise = EXECUTE.machine_noise(json.loads(nb.read_text(encoding="utf-8")))
    assert not noise, (f"{nb.relative_to(REPO)}: machine noise in saved outputs (fix the cell, then "
                       f"`.venv/bin/python docs/execute_notebooks.py {nb.relative_to(REPO)}`):\n  " + "\n  ".join(noise))


def test_there_are_notebooks_to_scan():
    names = {p.name for p in NOTEBOOKS}
    assert {"index.ipynb", "00_data.ipynb", "03_standardize.ipynb"} <= names


BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796084475.765883   21812 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results\n"
    "I0000 00:00:1796084475.766744   21812 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.\n"
    "I0000 00:00:1796084475.941152   21812 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n")


@pytest.mark.parametrize("what, text", [
    ("TensorFlow's start-up banner", BANNER),
    ("a TensorFlow / absl log line", "WARNING:absl:You are saving your model as an HDF5 file via `model.save()`.\n"),
    ("a TensorFlow / absl log line", "W0000 00:00:1796084475.765883   21812 op_level_cost.cc:699] Error in cost model\n"),
    ("a TensorFlow / absl log line", "WARNING:tensorflow:5 out of the last 5 calls triggered tf.function retracing\n"),
    ("a temporary path", "model written to /tmp/tmpxeexixzz/run/best.keras\n"),
    ("a temporary path", "/tmp/pytest-of-me/pytest-3/test_x0/case.gif\n"),
    ("an HTTP server log timestamp", '127.0.0.1 - - [27/Nov/2026 05:22:18] "GET /Task01_BrainTumour.tar HTTP/1.1" 200 -\n'),
    ("a terminal colour code", '\x1b[1mModel: "unet3d_d3_f8"\x1b[0m\n'),
    ("the memory available now", "budget 11.3 GB (3/4 of the 15.1 GB available now)\n"),
])
def test_the_scan_finds_each_kind_of_noise(what, text):
    nb = notebook(("x = 1", []), ("#| hide\nrun_it()", [stream(text)]))
    found = EXECUTE.machine_noise(nb)
    assert found and all(f.startswith("cell 1 (run_it()): ") for f in found), found  # names the cell, skips `#|`
    assert any(f"{what}: " in f for f in found), found
    # in a text/plain result or a traceback, the same
    result = {"output_type": "execute_result", "data": {"text/plain": text}, "metadata": {}, "execution_count": None}
    assert EXECUTE.machine_noise(notebook(("f()", [result])))
    error = {"output_type": "error", "ename": "E", "evalue": "", "traceback": text.splitlines()}
    assert EXECUTE.machine_noise(notebook(("f()", [error])))


def test_the_scan_leaves_what_a_reader_should_see():
    clean = ("measured on 2026-11-30 on 2 CPU cores\n"
             "Warning: this patch holds no enhancing tumour, so its sensitivity is undefined (NaN)\n"
             "written cases/BRATS_001.nii.gz and tmp/demo/run/best.keras\n"
             "standard deviation of X_norm[0, :, :, 0]: 1.00\n")
    nb = notebook(("print(report)", [stream(clean, "stdout")]),
                  ("x", [{"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo="}, "metadata": {}}]))
    assert EXECUTE.machine_noise(nb) == []
