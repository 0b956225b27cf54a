"""An exercise done in a real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium via Playwright.

`bts exercises` writes the learner's copy of the lesson "2. Preparing the data" into JupyterLab's root. The test opens
it, runs every cell above the check of `get_sub_volume` (the check says "not attempted" and the page runs on), then
types into the exercise cell the course code's known defect — the y and z corners drawn from the x sizes — runs the
cell and its check and reads the mistake named in the check's output; runs the check again alone and reads that it
still does not pass; then types the right code (which also prints a line of its own when called), runs both again,
reads "Correct", runs the course's test cell below and sees the learner's own line in its output: the cells below
use the learner's function. The browser is the system's Chromium (Debian package `chromium`; never
`playwright install`). Screenshots are saved in pytest's tmp_path (their paths are printed; run with -s to see them).
"""
import json
import os
import secrets
import signal
import subprocess
import urllib.request

import pytest

from bts_course.checks import checks
from bts_course.exercises import course_exercises
from bts_course.lessons import assignment, write_exercises
from test_browser_explorer import CHROMIUM, CHROMIUM_ARGS, free_port, jupyter_command, wait_for_server

KERNEL_RUN_S = 300  # kernel start + the whole sampling page on two busy cores
NOTEBOOK = assignment()["get_sub_volume"].lesson

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package chromium")


@pytest.fixture
def lab(tmp_path):
    "JupyterLab on 127.0.0.1 with a token, its root holding the learner's copy of the sampling lesson; yields (base_url, token)"
    root, state = tmp_path / "root", tmp_path / "state"
    write_exercises(root, only=["get_sub_volume"])
    settings = state / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    (settings / "notebook-extension").mkdir(parents=True)  # every cell in the page, so cells can be found by index
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}), encoding="utf-8")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
               IPYTHONDIR=str(state / "ipython"), PYTHONUNBUFFERED="1")
    port, token = free_port(), secrets.token_hex(16)
    cmd = jupyter_command() + [
        "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None", "--ServerApp.terminals_enabled=False", "--allow-root"]
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, base, token, log)
        yield base, token
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"), timeout=10)
            proc.wait(timeout=30)
        except Exception:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=20)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        print(f"jupyter log: {log}")


CELL_INDEX = """marker => window.jupyterapp.shell.currentWidget.content.widgets
    .findIndex(c => c.model.type === 'code' && c.model.sharedModel.getSource().includes(marker))"""
OUTPUT_HAS = """([i, text]) => {
    const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
    return cell.outputArea && cell.outputArea.node.textContent.includes(text);
}"""
KERNEL_IDLE = """() => {
    const w = window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k && k.status === 'idle';
}"""


def wait_for_output(page, index: int, text: str, tmp_path):
    "Wait until cell `index` shows `text`; if it does not, fail with what the cell holds and shows, and a screenshot"
    try:
        page.wait_for_function(OUTPUT_HAS, arg=[index, text], timeout=KERNEL_RUN_S * 1000)
    except Exception:
        shot = tmp_path / "failed.png"
        page.screenshot(path=str(shot), full_page=True)
        cells = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets.map(
            c => [c.model.sharedModel.getSource().slice(0, 400), c.outputArea ? c.outputArea.node.textContent.slice(0, 600) : ''])""")
        pytest.fail(f"cell {index} never showed {text!r}; screenshot {shot}\n" + "\n".join(
            f"--- cell {i}:\n{src}\n>>> {out}" for i, (src, out) in enumerate(cells) if abs(i - index) <= 1))


def type_into_cell(page, index: int, source: str):
    "Replace the text of cell `index` as a learner would: click into it, select all, type the new text"
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(source)  # as typed or pasted: no auto-indentation on the way


def run_cell_and_the_next(page, index: int):
    "Shift+Enter in the exercise cell (runs it, moves to its check), Shift+Enter again (runs the check)"
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_RUN_S * 1000)
    page.keyboard.press("Shift+Enter")


def test_a_mistake_typed_into_an_exercise_is_named_and_the_right_code_passes(lab, tmp_path):
    from playwright.sync_api import sync_playwright
    base, token = lab
    ex = course_exercises()["get_sub_volume"]
    mistake = checks.get_sub_volume.mistakes[0]
    assert mistake.name == "y and z corners drawn from x"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            for attempt in range(3):  # a cold server may still be slow to serve the first page
                try:
                    page.goto(f"{base}/lab/tree/{NOTEBOOK}?reset&token={token}", timeout=120_000)
                    page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                                           timeout=120_000)
                    break
                except Exception:
                    if attempt == 2: raise
                    page.wait_for_timeout(5_000)
            page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_RUN_S * 1000)
            exercise = page.evaluate(CELL_INDEX, "# EXERCISE: get_sub_volume")
            assert exercise > 0
            check, below = exercise + 1, exercise + 2  # the check, then the course's test cell

            # the copy as written, from the top to the exercise's check: the check says "not attempted"
            page.evaluate("""i => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = i; }""", check)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-above')")
            page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_RUN_S * 1000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
            wait_for_output(page, check, "Not attempted yet", tmp_path)
            errors = page.evaluate("() => document.querySelectorAll('.jp-OutputArea-output[data-mime-type*=\"error\"]').length")
            assert errors == 0

            # a known mistake, typed in: the check names it
            type_into_cell(page, exercise, ex.cell(ex.variant(*mistake.example)))
            run_cell_and_the_next(page, exercise)
            wait_for_output(page, check, "Incorrect (y and z corners drawn from x)", tmp_path)
            text = page.evaluate("i => window.jupyterapp.shell.currentWidget.content.widgets[i].outputArea.node.textContent",
                                 check)
            assert "orig_y - output_y + 1" in text and "Traceback" not in text
            shot = tmp_path / "exercise_mistake.png"
            page.locator(".jp-Notebook .jp-Cell").nth(check).screenshot(path=str(shot))
            print(f"screenshot: {shot}")

            # the check cell run again, alone: the name holds the package's function now, and it is not "Correct"
            page.locator(".jp-Notebook .jp-Cell").nth(check).locator(".cm-content").click()
            page.keyboard.press("Control+Enter")
            wait_for_output(page, check, "Run your exercise cell first", tmp_path)
            text = page.evaluate("i => window.jupyterapp.shell.currentWidget.content.widgets[i].outputArea.node.textContent",
                                 check)
            assert "Your last version: Incorrect (y and z corners drawn from x)" in text and "Correct:" not in text

            # the right code, which says so when it is called: the check passes, and the cell below runs it
            mine = ex.cell(ex.variant(("    tries = 0", "    print('my own get_sub_volume ran')\n    tries = 0")))
            type_into_cell(page, exercise, mine)
            run_cell_and_the_next(page, exercise)
            wait_for_output(page, check, "Correct: get_sub_volume passes", tmp_path)  # HTML: code spans, no backticks
            shot = tmp_path / "exercise_correct.png"
            page.locator(".jp-Notebook .jp-Cell").nth(check).screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_RUN_S * 1000)
            page.keyboard.press("Shift+Enter")  # the course's test cell under the check
            wait_for_output(page, below, "my own get_sub_volume ran", tmp_path)
            errors = page.evaluate("() => document.querySelectorAll('.jp-OutputArea-output[data-mime-type*=\"error\"]').length")
            assert errors == 0
        finally:
            browser.close()
