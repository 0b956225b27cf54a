"""The course track: the lessons, the learner's copies of them, and `bts exercises` (writing, `--status`).

- the lessons: one per section in the course's order, each a short notebook that exports nothing, quiets TensorFlow
  first, names the library notebook where the machinery lives and links the next lesson;
- exercises come from the lessons, with one home each (the marked cell of a library notebook): the course's six graded
  cells in the course's order; in each learner's copy, nothing above an exercise (prose, code or outputs) shows what
  the learner writes in its holes;
- the copies: stubs, the imports the stub uses, and a check cell; written, kept when edited, refreshed when not;
- a copy run in a Jupyter kernel as written says "not attempted" at every check, with no TensorFlow start-up noise in
  any output; with the solutions typed in, every check passes and the cells below run the learner's own function;
- `bts exercises DIR --status` on copies with one correct, one wrong and one untouched exercise prints exactly those;
  on a folder that is not a set of copies, or a copy that does not parse, one line on stderr and exit 1.
"""
from __future__ import annotations

import functools, json, re, subprocess, sys, zipfile
from pathlib import Path

import pytest

from bts_course.cli import main
from bts_course.exercises import EXERCISE, START, course_exercises
from bts_course.lessons import (INDEX, MANIFEST, assignment, exercise_status, learner_copy, lesson_exercises,
                                lesson_paths, lessons_dir, read_lesson, write_exercises)

REPO = Path(__file__).resolve().parent.parent
BTS = str(Path(sys.executable).with_name("bts"))
COURSE = assignment()
LESSONS = lesson_paths()
GRADED = ["get_sub_volume", "standardize", "single_class_dice_coefficient", "dice_coefficient", "soft_dice_loss",
          "compute_class_sens_spec"]
sys.path.insert(0, str(REPO / "docs"))
from execute_notebooks import machine_noise  # noqa: E402  the docs' own list of what machine noise looks like


def cells(nb: dict, kind: str | None = None) -> list:
    return ["".join(c["source"]) for c in nb["cells"] if kind is None or c["cell_type"] == kind]


# ----------------------------------------------------------------------------------------------------
# the lessons
# ----------------------------------------------------------------------------------------------------

def test_the_lessons_follow_the_course():
    titles = [cells(read_lesson(p), "markdown")[0].splitlines()[0] for p in LESSONS]
    assert [p.name[:3] for p in LESSONS] == [f"{i:02d}_" for i in range(1, len(LESSONS) + 1)]
    assert [t.split(".")[0] for t in titles] == [f"# {i}" for i in range(1, len(LESSONS) + 1)], titles
    course = ["data", "preparing", "u-net", "dice", "training", "evaluation"]  # the course's sections, in its order
    assert len(LESSONS) >= len(course) + 4
    for title, word in zip(titles, course, strict=False): assert word in title.lower(), (title, word)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_lesson_exports_nothing_quiets_tensorflow_and_points_on(lesson):
    nb = read_lesson(lesson)
    code, prose = cells(nb, "code"), cells(nb, "markdown")
    assert not any(re.search(r"^\s*#\|\s*(default_exp|export)", s, re.M) for s in code)
    assert code[0].splitlines()[0].startswith("from bts_course.lessons import quiet_tensorflow; quiet_tensorflow()")
    assert re.search(r"^> \S", prose[0], re.M), "a one-line summary under the title"
    links = re.findall(r"\]\(([^)#]+\.ipynb)", "\n".join(prose))
    assert any(link.startswith("../") and (lesson.parent / link).is_file() for link in links), "the library notebook"
    for link in links: assert (lesson.parent / link).is_file(), (lesson.name, link)
    if lesson != LESSONS[-1]: assert LESSONS[LESSONS.index(lesson) + 1].name in links, "the next lesson"
    words = len(re.sub(r"```.*?```", "", "\n".join(prose), flags=re.S).split())
    assert 350 <= words <= 1600, (lesson.name, words)  # read in about twenty minutes


def test_every_exercise_is_in_one_lesson_in_the_course_s_order():
    assert set(COURSE) == set(course_exercises())  # every exercise of the library, and no other
    assert [n for n in COURSE if n in GRADED] == GRADED
    assert [COURSE[n].exercise.unq for n in GRADED] == [f"UNQ_C{i}" for i in range(1, 7)]
    assert [a.number for a in COURSE.values()] == list(range(1, len(COURSE) + 1))
    for a in COURSE.values():
        assert a.name in lesson_exercises(lessons_dir() / a.lesson) and a.exercise.notebook in {p.name for p in
                                                                                                 (REPO / "nbs").glob("*.ipynb")}


def test_a_lesson_s_exercise_cell_is_exactly_two_lines(tmp_path):
    lesson = read_lesson(lessons_dir() / COURSE["standardize"].lesson)
    cell = next(c for c in lesson["cells"] if "".join(c["source"]).startswith(f"{EXERCISE} standardize"))
    cell["source"] = ["# EXERCISE: standardize\n", "from bts_course.sampling import standardize"]  # not its home's module
    (tmp_path / "02_x.ipynb").write_text(json.dumps(lesson), encoding="utf-8")
    with pytest.raises(ValueError, match="imports it from bts_course.sampling, but its home"):
        assignment(tmp_path)


# ----------------------------------------------------------------------------------------------------
# the learner's copies
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(COURSE))
def test_nothing_above_an_exercise_gives_its_answer_away(name):
    "Every answer (what fills a hole of the stub) is searched in the source and outputs of every cell above the exercise"
    a = COURSE[name]
    nb = learner_copy(lessons_dir() / a.lesson)
    at = next(i for i, c in enumerate(nb["cells"]) if c.get("id") == f"solve-{name}")
    squeeze = lambda text: "".join(text.split())
    def shows(text, answer):  # the answer, spaces aside, not as the tail of a longer name (`standardized_image[...]`)
        return re.search(r"(?<![\w.])" + re.escape(squeeze(answer)), text) is not None
    above = [squeeze("".join(c["source"]) + json.dumps(c.get("outputs", []), ensure_ascii=False)) for c in nb["cells"][:at]]
    assert a.exercise.answers
    for answer in a.exercise.answers:
        shown = [i for i, text in enumerate(above) if shows(text, answer)]
        assert not shown, f"{a.lesson}: the answer {answer!r} of {name} shows in cell(s) {shown} above the exercise"
    assert "".join(nb["cells"][at]["source"]) == a.exercise.cell("stub")  # the stub, from the exercise's one home
    assert not any(shows(squeeze(a.exercise.cell("stub")), ans) for ans in a.exercise.answers)


@pytest.mark.parametrize("lesson", [p for p in LESSONS if lesson_exercises(p)], ids=lambda p: p.stem)
def test_a_copy_has_a_heading_the_imports_the_stub_and_a_check_per_exercise(lesson):
    nb = learner_copy(lesson)
    ids = [c.get("id") for c in nb["cells"]]
    sources = dict(zip(ids, cells(nb), strict=True))
    names = lesson_exercises(lesson)
    assert nb["metadata"]["bts_course"] == {"lesson": lesson.name, "exercises": names}
    assert len(set(ids)) == len(ids) and json.dumps(learner_copy(lesson)) == json.dumps(nb)  # same copy, byte for byte
    for name in names:
        i = ids.index(f"solve-{name}")
        assert ids[i - 2:i + 2] == [f"exercise-{name}", f"uses-{name}", f"solve-{name}", f"check-{name}"]
        assert f"Exercise {COURSE[name].number}: `{name}`" in sources[f"exercise-{name}"]
        assert START in sources[f"solve-{name}"] and "None" in sources[f"solve-{name}"]
        assert sources[f"check-{name}"].splitlines()[0] == "from bts_course.checks import checks"  # its one home
        assert sources[f"check-{name}"].splitlines()[-1].startswith(f"{name} = checks.{name}.check({name})")
        namespace = {}
        exec(sources[f"uses-{name}"], namespace)  # the imports alone let the stub cell run
        # (run as a check runs it: the stub's Keras registration must not replace the package's metric for later tests)
        assert callable(COURSE[name].exercise.define_cell(sources[f"solve-{name}"], namespace))
    solved = read_lesson(lesson)
    kept = [c for c in solved["cells"] if c["cell_type"] == "markdown" or not "".join(c["source"]).startswith((EXERCISE, "#| docs"))]
    assert all(c in nb["cells"] for c in kept)  # prose, code and outputs of the lesson kept as they are
    for c in solved["cells"]:  # a cell that needs the real scans: its code and saved text, shown, not run
        if "".join(c["source"]).startswith("#| docs"):
            shown = next(d for d in nb["cells"] if d["id"] == c["id"])
            assert shown["cell_type"] == "markdown" and "".join(c["source"]).split("\n", 1)[1] in "".join(shown["source"])


def test_write_keeps_an_edited_copy_and_refreshes_an_untouched_one(tmp_path):
    dest = tmp_path / "mine"
    first = dict((p.name, w) for p, w in write_exercises(dest))
    assert list(first) == [p.name for p in LESSONS] + [INDEX] and set(first.values()) == {"written"}
    assert (dest / MANIFEST).is_file()
    assert {w for _, w in write_exercises(dest)} == {"unchanged"}
    copy = dest / COURSE["standardize"].lesson
    copy.write_text(copy.read_text(encoding="utf-8").replace("centered = None", "centered = image_slice - image_slice.mean()"), encoding="utf-8")
    edited = copy.read_text(encoding="utf-8")
    again = dict((p.name, w) for p, w in write_exercises(dest))
    assert again[copy.name].startswith("kept") and copy.read_text(encoding="utf-8") == edited
    assert dict((p.name, w) for p, w in write_exercises(dest, force=True))[copy.name] == "overwritten"
    assert "centered = None" in copy.read_text(encoding="utf-8")
    only = dict((p.name, w) for p, w in write_exercises(tmp_path / "two", only=["standardize", "dice_and_soft_dice"]))
    assert list(only) == [COURSE["standardize"].lesson, COURSE["soft_dice_loss"].lesson, INDEX]
    with pytest.raises(ValueError, match="unknown exercise or lesson 'nope'"): write_exercises(tmp_path, only=["nope"])


def test_bts_exercises_writes_the_copies_and_says_where_they_are(tmp_path):
    r = subprocess.run([BTS, "exercises", tmp_path / "ex", "--only", "standardize,brain_box"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{tmp_path / 'ex' / COURSE['standardize'].lesson}: written",
                                     f"{tmp_path / 'ex' / COURSE['brain_box'].lesson}: written",
                                     f"{tmp_path / 'ex' / INDEX}: written", f"open them with: jupyter lab {tmp_path / 'ex'}"]
    r = subprocess.run([BTS, "exercises", tmp_path / "ex", "--only", "nothing"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "unknown exercise" in r.stderr


def test_the_wheel_ships_the_lessons_and_the_exercises_homes(tmp_path):
    pytest.importorskip("build")
    import shutil
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "settings.ini", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        (src / name).write_bytes((REPO / name).read_bytes())
    shutil.copytree(REPO / "bts_course", src / "bts_course", ignore=shutil.ignore_patterns("__pycache__", "notebooks"))
    shutil.copytree(REPO / "nbs", src / "nbs", ignore=shutil.ignore_patterns("images", ".*"))
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", src],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist())
    assert {f"bts_course/notebooks/{a.exercise.notebook}" for a in COURSE.values()} <= names
    assert {f"bts_course/notebooks/course/{p.name}" for p in LESSONS} <= names


# ----------------------------------------------------------------------------------------------------
# where the exercises stand: `bts exercises --status`
# ----------------------------------------------------------------------------------------------------

def put_answer(folder: Path, name: str, source: str):
    "Type `source` into the exercise cell of `name` in the learner's copy and save it, as a learner does"
    path = folder / COURSE[name].lesson
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c.get("id") == f"solve-{name}")
    cell["source"] = source.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def test_status_says_correct_wrong_and_untouched_exactly(tmp_path):
    write_exercises(tmp_path, only=["get_sub_volume", "standardize", "single_class_dice_coefficient"])
    sub, std = COURSE["get_sub_volume"].exercise, COURSE["standardize"].exercise
    put_answer(tmp_path, "get_sub_volume", sub.cell("solution"))
    put_answer(tmp_path, "standardize", std.cell(std.variant(("centered / std if std > 0 else 0", "centered / std"))))
    r = subprocess.run([BTS, "exercises", tmp_path, "--status"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    n = {name: COURSE[name].number for name in COURSE}
    stem = {name: Path(COURSE[name].lesson).stem for name in COURSE}
    assert r.stdout.splitlines() == [
        f"{n['get_sub_volume']:>2}. get_sub_volume ({stem['get_sub_volume']}): correct",
        f"{n['standardize']:>2}. standardize ({stem['standardize']}): incorrect (divides by zero)",
        f"{n['single_class_dice_coefficient']:>2}. single_class_dice_coefficient "
        f"({stem['single_class_dice_coefficient']}): not attempted"]


def test_status_names_a_cell_that_does_not_run_or_never_ends(tmp_path):
    write_exercises(tmp_path, only=["standardize", "window_sums"])
    put_answer(tmp_path, "standardize", "def standardize(image)\n    return image")
    put_answer(tmp_path, "window_sums", "while True: pass")
    rows = {r.name: (r.status, r.mistake) for r in exercise_status(tmp_path, timeout=1)}
    assert rows == {"standardize": ("incorrect", "the cell does not run: SyntaxError"),
                    "window_sums": ("incorrect", "the cell does not finish")}


@pytest.mark.parametrize("what", ["not copies", "not a notebook", "no folder"])
def test_status_on_bad_input_is_one_line(tmp_path, what, capsys):
    "Through `main` in this process (the executable itself runs in the tests above)"
    if what == "not copies": (tmp_path / "notes.ipynb").write_text("{}", encoding="utf-8")
    elif what == "not a notebook":
        write_exercises(tmp_path, only=["standardize"])
        (tmp_path / COURSE["standardize"].lesson).write_text('{"cells": [', encoding="utf-8")
    target = tmp_path / "absent" if what == "no folder" else tmp_path
    code, r = main(["exercises", str(target), "--status"]), capsys.readouterr()
    assert code == 1 and r.out == "" and len(r.err.strip().splitlines()) == 1, (r.out, r.err)
    expected = {"not copies": "not a folder of copies written by `bts exercises`",
                "not a notebook": "not a notebook that can be read", "no folder": "not a folder"}[what]
    assert expected in r.err and "Traceback" not in r.err


# ----------------------------------------------------------------------------------------------------
# a copy, run in a Jupyter kernel as a learner runs it
# ----------------------------------------------------------------------------------------------------

SKIP_FLAGS = {"slow", "gpu", "download", "docs"}  # settings.ini's tst_flags: cells nbdev_test does not run either


def _skipped(source: str) -> bool:
    head = [l for l in source.splitlines()[:4] if l.startswith("#|")]
    return any(l[2:].strip() in SKIP_FLAGS or l.replace(" ", "") == "#|eval:false" for l in head)


def _text(cell) -> str:
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@functools.lru_cache(maxsize=None)
def run_copy(path: Path) -> dict:
    """Run the learner's copy at `path` in a fresh kernel that shows what native code writes to stderr (as JupyterLab
    does), from its folder, top to bottom as written; then, in the same kernel, type the course-style solution into
    each exercise cell, run it, its check and the cells below it up to the next exercise, and ask which function the
    name holds. Returns the copy as run and, per exercise, the check's text as written and with the solution, and
    `__module__` of the function the cells below used."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    names = nb.metadata["bts_course"]["exercises"]
    at = {n: next(i for i, c in enumerate(nb.cells) if c.get("id") == f"solve-{n}") for n in names}
    for c in nb.cells:
        if c.cell_type == "code" and _skipped(c.source): c.source = "pass  # a flagged cell, as nbdev_test skips it"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.reset_execution_trackers()
    found = {"as written": {}, "solved": {}, "used": {}}
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells): client.execute_cell(cell, i)
        written = nbformat.from_dict(json.loads(nbformat.writes(nb)))
        for n in names: found["as written"][n] = _text(nb.cells[at[n] + 1])
        for k, n in enumerate(names):
            nb.cells[at[n]].source = COURSE[n].exercise.cell("solution")
            stop = at[names[k + 1]] - 2 if k + 1 < len(names) else len(nb.cells)  # up to the next heading
            for i in range(at[n], stop): client.execute_cell(nb.cells[i], i)
            found["solved"][n] = _text(nb.cells[at[n] + 1])
            nb.cells.append(nbformat.v4.new_code_cell(f"print({n}.__module__)"))  # which function the name holds now
            client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
            found["used"][n] = _text(nb.cells.pop()).strip()
    found["notebook"] = written
    return found


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    "The learner's copies, as `bts exercises` writes them"
    root = tmp_path_factory.mktemp("learner")
    write_exercises(root)
    return root


RUN_IN_A_KERNEL = [COURSE["get_sub_volume"].lesson, COURSE["soft_dice_loss"].lesson]  # the graded cells' lessons with TF


@pytest.mark.parametrize("lesson", RUN_IN_A_KERNEL)
def test_a_copy_runs_as_written_every_check_not_attempted_and_no_tensorflow_noise(copies, lesson):
    found = run_copy(copies / lesson)
    for name, text in found["as written"].items():
        assert text.startswith("Not attempted yet"), (name, text)
        assert f"Until yours passes, the cells below use the package's `{name}`" in text
    assert machine_noise(json.loads(json.dumps(found["notebook"]))) == []
    streams = [o for c in found["notebook"].cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert streams == [], streams


@pytest.mark.parametrize("lesson", RUN_IN_A_KERNEL)
def test_a_copy_with_the_solutions_typed_in_passes_and_runs_the_learner_s_own_function(copies, lesson):
    found = run_copy(copies / lesson)
    for name, text in found["solved"].items():
        assert text.startswith(f"Correct: `{name}` passes"), (name, text)
        assert f"The cells below use your `{name}`." in text
        assert found["used"][name] == "__main__", (name, found["used"][name])  # the learner's, defined in the notebook
