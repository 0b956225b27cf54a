"""The exercises' checks: what they find in a learner's function, and that they cannot be fooled.

- every exercise: the package's function and the course-style solution pass, the stub is "not attempted", and a
  version of the solution with each listed mistake put in is recognised as that mistake, with its own message;
  the course's own accepted answers pass, with a note where they differ from the batch-correct version;
- the check judges the learner's own function: handed the package's function (what the check cell binds after a
  wrong answer) or a function checked before and unchanged, it says to run the exercise cell first, never "correct";
  a right answer is handed back for the cells below, a wrong one is replaced by the package's;
- a loss is checked where it is used, in a training step, so a numpy loss is named as one that cannot be differentiated;
- hints follow the mistake found: why first, in words; the lines to fix last;
- bad input: a learner's function that raises, returns the wrong type or shape, writes into its input or runs too
  long gets a message that says what was called, what came back and what was expected, never a traceback, and the
  next check still works.

The lessons, the learner's copies and `bts exercises --status` are tested in test_lessons.py.
"""
from __future__ import annotations

import json, re, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from bts_course.checking import CheckCase, Check
from bts_course.checks import audit, checks
from bts_course.exercises import END, EXERCISE, course_exercises, notebooks_dir, parse_exercise

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
    listed = {m.name: m for m in checks[name].mistakes}
    for fb in mistakes:  # the mistake's own message, named; the course's accepted forms pass with it as a note
        m = listed[fb.mistake]
        assert fb.passed == m.accepted and (m.message in fb.message if m.accepted else fb.message.startswith(m.message)), fb


def holes_of(ex) -> list:
    "What the learner writes in each `{{...}}` of the exercise's `# STUB:` lines"
    nb = json.loads((notebooks_dir() / ex.notebook).read_text(encoding="utf-8"))
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
    assert "Traceback" not in str(fb) and "bts_course/checking.py" not in str(fb)


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
    assert "Not attempted yet" in out and "Until yours passes, the cells below use the package's `window_sums`" in out
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
    code = "import sys, bts_course.exercises, bts_course.checking, bts_course.checks; print('tensorflow' in sys.modules)"
    assert run_python(code) == "False"


# ----------------------------------------------------------------------------------------------------
# a check judges the learner's own function, and cannot be fooled
# ----------------------------------------------------------------------------------------------------

def _fresh_check(name):
    "The registered check of `name`, with no memory of earlier checks in this process"
    check = checks[name]
    check._last, check._found = None, None
    return check


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_answer_checked_again_still_fails_and_a_right_one_is_handed_back(name, capsys):
    check, ex = _fresh_check(name), EXERCISES[name]
    m = next(m for m in check.mistakes if m.example and not m.accepted)
    wrong = ex.define(ex.variant(*m.example))
    use = check.check(wrong)  # as the check cell does: `name = checks.name.check(name)`
    first = capsys.readouterr().out
    assert first.startswith("Incorrect") and check.is_package(use) and use is not wrong, first
    for _ in range(2):  # the check cell run again (and again), the exercise cell not: it holds the package's function now
        use = check.check(use)
        again = capsys.readouterr().out
        assert again.startswith("Run your exercise cell first") and "Correct" not in again.split("\n")[0], again
        assert f"Your last version: Incorrect ({m.name})" in again
    check.check(wrong)  # the same wrong function again: nothing new
    out = capsys.readouterr().out
    assert out.startswith(f"Run your exercise cell first ({m.name}): Nothing new since the last check"), out
    right = ex.define("solution")
    assert check.check(right) is right  # the cells below use the learner's own function
    out = capsys.readouterr().out
    assert out.startswith("Correct") and f"The cells below use your `{name}`." in out, out


def test_the_package_function_is_never_correct_for_the_learner(capsys):
    for check in checks:
        _fresh_check(check.name).check(check.reference)
        out = capsys.readouterr().out
        assert out.startswith("Run your exercise cell first") and "Your last version" not in out, (check.name, out)


COURSE_DICE = """    dice_numerator = 2. * tf.reduce_sum(y_true * y_pred, axis=axis) + epsilon
    dice_denominator = tf.reduce_sum(y_true, axis=axis) + tf.reduce_sum(y_pred, axis=axis) + epsilon
    dice_coefficient = tf.reduce_mean(dice_numerator / dice_denominator)
    return dice_coefficient"""
COURSE_LOSS = """    dice_numerator = 2. * tf.reduce_sum(y_true * y_pred, axis=axis) + epsilon
    dice_denominator = tf.reduce_sum(y_true**2, axis=axis) + tf.reduce_sum(y_pred**2, axis=axis) + epsilon
    dice_loss = 1 - tf.reduce_mean(dice_numerator / dice_denominator)
    return dice_loss"""


@pytest.mark.parametrize("name, lines", [("dice_coefficient", COURSE_DICE), ("soft_dice_loss", COURSE_LOSS)])
def test_the_course_s_own_answers_pass_with_a_note_on_its_batch_defect(name, lines):
    "The course's accepted answer, as the course wrote it (K.sum as tf.reduce_sum), sums over axes (1, 2, 3) of a batch"
    fb = checks[name].run(EXERCISES[name].define(lines))
    assert fb.passed and fb.mistake == "batch axis not shifted", fb
    assert fb.headline == "Correct as the course grades it (batch axis not shifted)"
    assert "known defect" in fb.message and "(B, C, X, Y, Z)" in fb.message


def test_a_numpy_loss_is_named_as_one_training_cannot_differentiate():
    ex = EXERCISES["soft_dice_loss"]
    numpy_loss = ex.define(ex.variant(("tf.reduce_sum", "np.sum"), ("tf.reduce_mean", "np.mean")))
    import tensorflow as tf
    assert abs(float(numpy_loss(np.eye(2)[None, ..., None], np.eye(2)[None, ..., None], epsilon=1)) - 0.0) < 1e-6
    assert numpy_loss(tf.constant(np.ones((1, 2, 2, 1))), tf.constant(np.ones((1, 2, 2, 1)))) is not None  # eager: it runs
    fb = checks.soft_dice_loss.run(numpy_loss)
    assert fb.status == "incorrect" and fb.mistake == "cannot be differentiated", fb
    assert "In a training step of a tiny model, Keras calling it raised" in fb.message
    assert checks.soft_dice_loss.run(ex.define("solution")).passed  # the same step passes the right loss


@pytest.mark.parametrize("name, mistake", [
    ("compute_class_sens_spec", "formulas swapped"), ("compute_class_sens_spec", "returned in the wrong order"),
    ("get_sub_volume", "tumour share, not background share"), ("get_sub_volume", "keeps background patches"),
    ("get_sub_volume", "background counted, not its share"), ("standardize", "sample standard deviation (ddof=1)"),
    ("single_class_dice_coefficient", "rounded probabilities"), ("dice_coefficient", "rounded probabilities"),
    ("soft_dice_loss", "rounded probabilities")])
def test_each_diagnosis_names_its_own_cause(name, mistake):
    "Mistakes that give the same wrong numbers, or look alike, are told apart: each gets its own message"
    check, ex = checks[name], EXERCISES[name]
    m = next(m for m in check.mistakes if m.name == mistake)
    fb = check.run(ex.define(ex.variant(*m.example)))
    assert (fb.status, fb.mistake) == ("incorrect", mistake), fb
    others = [o.message for o in check.mistakes if o is not m]
    assert fb.message.startswith(m.message) and not any(fb.message.startswith(o) for o in others)


@pytest.mark.parametrize("name", NAMES)
def test_hints_follow_the_mistake_found_words_first_code_last(name):
    check, ex = _fresh_check(name), EXERCISES[name]
    for m in [m for m in check.mistakes if m.example and not m.accepted]:
        check.run(ex.define(ex.variant(*m.example)))
        hints = [check.hint() for _ in range(2)]
        assert hints[0].title.startswith("Hint 1") and f"({name}: {m.name})" in hints[0].title
        assert not hints[0].code and hints[0].text == (m.hint or check.hints[0]), (m.name, hints[0])
        solution = {l.strip() for l in ex.solution}
        if hints[1].code: assert {l.strip() for l in hints[1].code.splitlines()} <= solution, (m.name, hints[1])
    check.run(ex.define("solution"))
    assert check.hint(1).text == check.hints[0] and not check.hint(1).code  # no mistake: the exercise's own hints


# ----------------------------------------------------------------------------------------------------
# the markers of an exercise's one home
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


def test_markers_parse_into_stub_solution_and_answers():
    ex = parse_exercise(MARKED, "t.ipynb", "t")
    assert ex.stub == ("    y = None", "    return y") and ex.solution == ("    y = x + x", "    return y")
    assert ex.solved == ("    return 2 * x",) and ex.holes == ("y = None",) and ex.answers == ("x + x",)
    assert "#| export" not in ex.cell("stub") and ex.define("solution", {})(3) == 6 and ex.define("stub", {})(3) is None
    assert ex.define_cell("def twice(x):\n    return x * 2", {})(4) == 8  # a learner's whole cell
    with pytest.raises(ValueError, match="does not define the function `twice`"): ex.define_cell("x = 1", {})
    with pytest.raises(ValueError, match="expected one"): parse_exercise(MARKED.replace(END, ""), "t.ipynb")
