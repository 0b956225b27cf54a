"""The course as an assignment: the exercise markers, the learner's copies, the checks, and `bts exercises`.

- every exercise: the package's function and the course-style solution pass, the stub is "not attempted", and a
  version of the solution with each listed mistake put in is recognised as that mistake, with its own message;
- bad input: a learner's function that raises, returns the wrong type or shape, writes into its input or runs too
  long gets a message that says what was called, what came back and what was expected, never a traceback, and the
  next check still works;
- the learner's copies: markers parsed, stubs and check cells written, no export directive left, an edited copy
  never overwritten without `force`, an untouched one refreshed; the notebooks ship in the wheel;
- each learner's copy runs top to bottom in a Jupyter kernel as written (every check says "not attempted", nothing
  fails); then, in the same kernel, the course-style solution is put into each exercise cell and that cell and its
  check run again, as a learner does: every check passes. (From each check on, the page runs on the package's
  function whatever the check found, so the rest of the page would run as it did the first time.)
"""
from __future__ import annotations

import functools, json, re, subprocess, sys, time, zipfile
from pathlib import Path

import numpy as np
import pytest

from bts_course.exercises import (CheckCase, Check, END, EXERCISE, MANIFEST, STUB, audit, checks, course_exercises,
                                  learner_notebook, notebooks_dir, parse_exercise, write_exercises)

REPO = Path(__file__).resolve().parent.parent
BTS = str(Path(sys.executable).with_name("bts"))
EXERCISES = course_exercises()
NAMES = list(EXERCISES)
GRADED = {"get_sub_volume": "UNQ_C1", "standardize": "UNQ_C2", "single_class_dice_coefficient": "UNQ_C3",
          "dice_coefficient": "UNQ_C4", "soft_dice_loss": "UNQ_C5", "compute_class_sens_spec": "UNQ_C6"}


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout.strip()


# ----------------------------------------------------------------------------------------------------
# the exercises and their checks
# ----------------------------------------------------------------------------------------------------

def test_the_course_s_six_graded_cells_and_ours_are_marked():
    assert {n: EXERCISES[n].unq for n in GRADED} == GRADED
    ours = [ex for ex in EXERCISES.values() if ex.unq is None]
    assert len(ours) >= 4 and len({ex.notebook for ex in ours}) >= 4  # one per section, sampling to evaluation
    for ex in EXERCISES.values():
        assert ex.module.startswith("bts_course.") and ex.holes and all("None" in h for h in ex.holes), ex.name


def test_every_exercise_has_a_check_and_every_check_an_exercise():
    assert sorted(c.name for c in checks) == sorted(NAMES)
    for c in checks:
        assert c.module == EXERCISES[c.name].module and c.hints and c.mistakes, c.name
        assert callable(c.reference) and c.reference.__name__ == c.name


@pytest.mark.parametrize("name", NAMES)
def test_reference_and_solution_pass_stub_not_attempted_each_mistake_named(name):
    rows = audit(checks[name])
    wrong = [(what, want, str(fb)) for what, want, fb in rows if want not in (fb.status, fb.mistake)]
    assert not wrong, wrong
    mistakes = [fb for what, want, fb in rows if what.startswith("mistake: ")]
    assert len(mistakes) == sum(1 for m in checks[name].mistakes if m.example)  # every listed mistake has its example
    messages = [fb.message.split("\n")[0] for fb in mistakes]
    assert len(set(messages)) == len(messages), "two mistakes share a message"
    listed = {m.name: m.message for m in checks[name].mistakes}
    for fb in mistakes: assert fb.message.startswith(listed[fb.mistake]), fb  # the mistake's own message, named


def holes_of(ex) -> list:
    "What the learner writes in each `{{...}}` of the exercise's `# STUB:` lines"
    nb = json.loads((notebooks_dir() / ex.notebook).read_text())
    cell = next("".join(c["source"]) for c in nb["cells"] if f"{EXERCISE} {ex.name}\n" in "".join(c["source"]))
    return re.findall(r"\{\{(.+?)\}\}", cell)


@pytest.mark.parametrize("name", NAMES)
def test_a_check_never_shows_the_solution_unless_asked(name):
    "No feedback quotes what the learner writes in a hole (hints may nudge with less); `solution()` shows it all"
    ex, check = EXERCISES[name], checks[name]
    holes = [h for h in holes_of(ex) if len(h) > 12]
    assert holes, name
    said = [str(fb) for _, _, fb in audit(check)] + [str(check.run(lambda *a, **k: None))]
    said = [re.sub(r"line \d+ of your cell: `.*?`", "", text) for text in said]  # quoting the learner's own line is fine
    for text in said:
        for hole in holes: assert hole not in text, (name, hole, text)
    assert all(hole in check.solution().code for hole in holes)


def test_hints_come_one_by_one_and_cycle():
    check = Check("toy", "toy", [], hints=["first", "second"], reference=abs)
    assert [check.hint().text for _ in range(3)] == ["first", "second", "first"]
    assert check.hint(2).text == "second" and "Hint 2 of 2" in str(check.hint(2))


# ----------------------------------------------------------------------------------------------------
# bad input: what a learner's function may do
# ----------------------------------------------------------------------------------------------------

def _standardize_like(fn):
    "A learner's standardize that does `fn` to its input"
    def standardize(image): return fn(image)
    return standardize


@pytest.mark.parametrize("what, fn, needles", [
    ("raises", lambda image: image.no_such_attribute, ["raised AttributeError", "no_such_attribute", "standardize(array"]),
    ("wrong type", lambda image: image.tolist(), ["returned list [", "; expected array (4, 160, 160, 16) float32"]),
    ("wrong shape", lambda image: image[0], ["returned array (160, 160, 16) float32; expected array (4, 160, 160, 16)"]),
    ("a scalar", lambda image: 1.0, ["returned 1", "expected"]),
    ("mutates", lambda image: image.__isub__(image.mean()), ["changed its input `image`", "copy"]),
    ("exits", lambda image: sys.exit(1), ["raised SystemExit"]),
    ("interrupts", lambda image: (_ for _ in ()).throw(KeyboardInterrupt), ["raised KeyboardInterrupt"]),
])
def test_bad_learner_functions_get_a_clear_message(what, fn, needles):
    fb = checks.standardize.run(_standardize_like(fn))
    assert fb.status == "incorrect", fb
    for needle in needles: assert needle in fb.message, (needle, fb.message)
    assert "Traceback" not in str(fb) and "bts_course/exercises.py" not in str(fb)


def test_a_function_that_runs_too_long_is_left_behind_and_the_next_check_works():
    def standardize(image):
        time.sleep(3)
        return image
    start = time.perf_counter()
    fb = checks.standardize.run(standardize, timeout=0.5)
    assert time.perf_counter() - start < 2.5
    assert fb.mistake == "too slow" and "did not return within 0.5 s" in fb.message and "restart the kernel" in fb.message
    ex = EXERCISES["standardize"]
    assert checks.standardize.run(ex.define("solution")).passed  # the kernel is still usable


def test_the_line_that_raised_is_named():
    ex = EXERCISES["brain_box"]
    fb = checks.brain_box.run(ex.define(ex.variant(("np.maximum(where.min(axis=0) - margin, 0)", "where.min(axis=0) - undefined_name"))))
    assert "NameError: name 'undefined_name' is not defined" in fb.message
    assert re.search(r"line \d+ of your cell: `start = where.min\(axis=0\) - undefined_name`", fb.message), fb.message


def test_not_finished_names_the_placeholders_left():
    ex = EXERCISES["get_sub_volume"]
    half = ex.variant(("start_x = np.random.randint(0, orig_x - output_x + 1)", "start_x = 0"))
    half = half.replace("np.random.randint(0, orig_y - output_y + 1)", "None")
    fb = checks.get_sub_volume.run(ex.define(half))
    assert fb.status == "incomplete" and "`start_y = None`" in fb.message, fb


def test_a_bug_in_a_check_is_a_message_not_a_traceback():
    broken = Check("standardize", "bts_course.preprocess", lambda: [CheckCase("boom", (1 / 0,))])  # its cases cannot be made
    fb = broken.run(lambda x: 1)
    assert fb.status == "error" and "bug in bts_course" in fb.message


def test_check_returns_the_package_function_and_says_so(capsys):
    ex = EXERCISES["window_sums"]
    use = checks.window_sums.check(ex.define("stub"))
    out = capsys.readouterr().out
    assert "Not attempted yet" in out and "The cells below use the package's `window_sums`" in out
    assert use.__code__ is checks.window_sums.reference.__code__
    mask = np.ones((3, 3, 3), np.uint8)
    from bts_course.sampling import summed_volume_table
    assert (use(summed_volume_table(mask), 2) == 8).all()


def test_the_numpy_generator_is_left_as_it_was():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    checks.get_sub_volume.run(EXERCISES["get_sub_volume"].define("solution"))
    assert np.random.random() == expected


def test_the_exercises_and_checks_modules_load_no_tensorflow():
    assert run_python("import sys, bts_course.exercises, bts_course.checks; print('tensorflow' in sys.modules)") == "False"


# ----------------------------------------------------------------------------------------------------
# the markers and the learner's copies
# ----------------------------------------------------------------------------------------------------

MARKED = '''#| export
# EXERCISE: twice
def twice(x):
    "2 x"
    ### START CODE HERE (REPLACE INSTANCES OF 'None' with your code) ###
    # STUB: y = {{x + x}}
    # STUB: return y
    return 2 * x
    ### END CODE HERE ###'''


def test_markers_parse_into_stub_and_solution():
    ex = parse_exercise(MARKED, "t.ipynb", "t")
    assert ex.stub == ("    y = None", "    return y") and ex.solution == ("    y = x + x", "    return y")
    assert ex.solved == ("    return 2 * x",) and ex.holes == ("y = None",)
    assert "#| export" not in ex.cell("stub") and ex.define("solution", {})(3) == 6 and ex.define("stub", {})(3) is None
    with pytest.raises(ValueError, match="expected one"): parse_exercise(MARKED.replace(END, ""), "t.ipynb")


def test_every_copy_has_stubs_and_checks_and_no_export_directive():
    for notebook in sorted({ex.notebook for ex in EXERCISES.values()}):
        nb = learner_notebook(notebooks_dir() / notebook)
        sources = ["".join(c["source"]) for c in nb["cells"]]
        assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
        assert not any(re.search(r"^\s*#\|\s*(default_exp|export)", s, re.M) for s in sources), notebook
        assert not any(STUB in s for s in sources), notebook  # no solution left behind in a comment
        names = nb["metadata"]["bts_course"]["exercises"]
        assert names == [n for n, ex in EXERCISES.items() if ex.notebook == notebook]
        for name in names:
            ex = EXERCISES[name]
            i = sources.index(ex.cell("stub"))
            assert sources[i + 1].rstrip().endswith(f"{name} = checks.{name}.check({name})")
            assert "from bts_course.exercises import checks" in sources[i + 1]
            copied = set(sources[i].splitlines())
            assert not [l for l in ex.solved if l.strip() and l not in ex.stub and l in copied], name
            if ex.unq: assert f"# {ex.unq} (UNIQUE CELL IDENTIFIER, DO NOT EDIT)" in sources[i]
        assert sum(EXERCISE in s for s in sources) == len(names)
        assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])  # cell ids stay unique


def test_prose_figures_and_outputs_are_kept():
    solved = json.loads((notebooks_dir() / "03_standardize.ipynb").read_text())
    copy = learner_notebook(notebooks_dir() / "03_standardize.ipynb")
    images = lambda nb: sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    markdown = lambda nb: [c["source"] for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert images(copy) == images(solved) > 0
    assert all(m in markdown(copy) for m in markdown(solved))


def test_write_never_overwrites_an_edited_copy_without_force(tmp_path):
    dest = tmp_path / "mine"
    first = dict((p.name, w) for p, w in write_exercises(dest, only=["standardize"]))
    assert first == {"03_standardize.ipynb": "written"} and (dest / MANIFEST).is_file()
    assert {w for _, w in write_exercises(dest, only=["standardize"])} == {"unchanged"}
    # an untouched copy is refreshed when the package writes something new (here: both exercises of the page)
    assert dict((p.name, w) for p, w in write_exercises(dest, only=["03_standardize"])) == {"03_standardize.ipynb": "updated"}
    copy = dest / "03_standardize.ipynb"
    copy.write_text(copy.read_text().replace("centered = None", "centered = image_slice - image_slice.mean()"))
    edited = copy.read_text()
    assert [w for _, w in write_exercises(dest)][1].startswith("kept")
    assert copy.read_text() == edited
    assert dict((p.name, w) for p, w in write_exercises(dest, force=True))["03_standardize.ipynb"] == "overwritten"
    assert "centered = None" in copy.read_text()


def test_a_notebook_it_did_not_write_is_kept(tmp_path):
    (tmp_path / "02_sampling.ipynb").write_text("{}")
    done = dict((p.name, w) for p, w in write_exercises(tmp_path, only=["window_sums"]))
    assert done["02_sampling.ipynb"].startswith("kept") and (tmp_path / "02_sampling.ipynb").read_text() == "{}"


def test_only_takes_exercise_and_notebook_names(tmp_path):
    assert [p.name for p, _ in write_exercises(tmp_path, only=["metrics", "gaussian_weights"])] == \
        ["04_metrics.ipynb", "06b_inference.ipynb"]
    with pytest.raises(ValueError, match="unknown exercise or notebook 'nope'"): write_exercises(tmp_path, only=["nope"])


def test_bts_exercises_command(tmp_path):
    r = subprocess.run([BTS, "exercises", tmp_path / "ex", "--only", "standardize,brain_box"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{tmp_path / 'ex' / '03_standardize.ipynb'}: written",
                                     f"open them with: jupyter lab {tmp_path / 'ex'}"]
    r = subprocess.run([BTS, "exercises", tmp_path / "ex", "--only", "nothing"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "unknown exercise" in r.stderr
    r = subprocess.run([BTS, "exercises", "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "--force" in r.stdout and "--only" in r.stdout


def test_the_wheel_ships_the_solved_notebooks(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "settings.ini", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        (src / name).write_bytes((REPO / name).read_bytes())
    import shutil
    shutil.copytree(REPO / "bts_course", src / "bts_course", ignore=shutil.ignore_patterns("__pycache__", "notebooks"))
    shutil.copytree(REPO / "nbs", src / "nbs", ignore=shutil.ignore_patterns("images", ".*"))
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", src],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist()
    assert {f"bts_course/notebooks/{ex.notebook}" for ex in EXERCISES.values()} <= set(names)


# ----------------------------------------------------------------------------------------------------
# the learner's copies, run in a Jupyter kernel
# ----------------------------------------------------------------------------------------------------

SKIP_FLAGS = {"slow", "gpu", "download", "docs"}  # settings.ini's tst_flags: cells nbdev_test does not run either


def _skipped(source: str) -> bool:
    head = [l for l in source.splitlines()[:4] if l.startswith("#|")]
    return any(l[2:].strip() in SKIP_FLAGS or l.replace(" ", "") == "#|eval:false" for l in head)


def _text(cell) -> str:
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@functools.lru_cache(maxsize=None)
def run_copy(path: Path) -> tuple:
    """Run the learner's copy at `path` in a fresh kernel, from its folder, top to bottom as written; then, in the same
    kernel, put the course-style solution into each exercise cell and run it and its check again, as a learner does.
    Returns the text of each check as written, and with the solution."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    names = nb.metadata["bts_course"]["exercises"]
    at = {n: next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and f"{EXERCISE} {n}\n" in c.source)
          for n in names}
    for c in nb.cells:
        if c.cell_type == "code" and _skipped(c.source): c.source = "pass  # a flagged cell, as nbdev_test skips it"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            extra_arguments=["--IPKernelApp.capture_fd_output=False"],
                            resources={"metadata": {"path": str(path.parent)}})
    client.reset_execution_trackers()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells): client.execute_cell(cell, i)
        as_written = [_text(nb.cells[at[n] + 1]) for n in names]
        for n in names:
            nb.cells[at[n]].source = EXERCISES[n].cell("solution")
            client.execute_cell(nb.cells[at[n]], at[n])
            client.execute_cell(nb.cells[at[n] + 1], at[n] + 1)
        solved = [_text(nb.cells[at[n] + 1]) for n in names]
    return names, as_written, solved


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    "The learner's copies, as `bts exercises` writes them"
    root = tmp_path_factory.mktemp("learner")
    write_exercises(root)
    return root


COPIES = sorted({ex.notebook for ex in EXERCISES.values()})


@pytest.mark.parametrize("notebook", COPIES)
def test_each_copy_runs_as_written_and_every_check_says_not_attempted(copies, notebook):
    names, said, _ = run_copy(copies / notebook)
    assert names == [n for n, ex in EXERCISES.items() if ex.notebook == notebook]
    for name, text in zip(names, said, strict=True):
        assert text.startswith("Not attempted yet"), (name, text)
        assert f"The cells below use the package's `{name}`" in text


@pytest.mark.parametrize("notebook", COPIES)
def test_each_copy_with_the_solutions_put_back_passes_every_check(copies, notebook):
    names, _, said = run_copy(copies / notebook)
    for name, text in zip(names, said, strict=True): assert text.startswith(f"Correct: `{name}` passes"), (name, text)
