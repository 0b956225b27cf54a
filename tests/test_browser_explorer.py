"""The slice explorer in a real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium via Playwright.

Starts JupyterLab once, on a free port with a temporary root holding two small explorer notebooks, opens each
in the system's Chromium (Debian package `chromium`; never `playwright install`), runs all cells and waits for
the three plane images. On label codes it moves the axial slider with the keyboard and checks that the displayed
pictures change; on class probabilities it moves the threshold slider with the keyboard and checks that the
displayed labels change (the axial picture, the voxel counts and the Dice in the key), and that the still picture
under the live widget is shown. Screenshots are saved in pytest's tmp_path (their paths are printed; run with -s).
"""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SERVER_START_S = 180   # a cold JupyterLab on two busy cores can take a minute
KERNEL_RUN_S = 240     # kernel start + imports + the cells

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package chromium")

CELLS = [
    "import numpy as np\n"
    "from bts_course.phantom import make_phantom\n"
    "from bts_course.widgets import SliceExplorer\n"
    "case = make_phantom(0, shape=(64, 64, 48))\n"
    "prediction = np.roll(case.label, 2, axis=0)\n"
    "ex = SliceExplorer(case, prediction=prediction)\n"
    "ex",
    "print('explorer ready at', ex.position)",
]

PROBABILITY_CELLS = [
    "import numpy as np\n"
    "from bts_course.phantom import make_phantom\n"
    "from bts_course.widgets import SliceExplorer\n"
    "case = make_phantom(0, shape=(64, 64, 48))\n"
    "probs = np.stack([case.label == code for code in (1, 2, 3)], axis=-1).astype(np.float32)\n"
    "for _ in range(2):  # soft borders: every threshold step moves some of them\n"
    "    for axis in range(3): probs = (np.roll(probs, 1, axis) + probs + np.roll(probs, -1, axis)) / 3\n"
    "ex = SliceExplorer(case, prediction=probs, uncertainty=probs * (1 - probs))\n"
    "ex",
    "ex.still()",
    "print('explorer ready at', ex.position)",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_command() -> list:
    "JupyterLab from the environment that runs the tests"
    exe = Path(sys.executable).with_name("jupyter-lab")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyterlab"]


def get(url: str, timeout: float = 10) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        r.read()
        return r.status


def wait_for_server(proc, base: str, token: str, log: Path):
    "Poll the server until it answers, then load /lab once so that the first real page load is warm"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text(encoding='utf-8')[-3000:]}")
        try:
            if get(f"{base}/api/status?token={token}") == 200: break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log.read_text(encoding='utf-8')[-3000:]}")
        time.sleep(1)
    for attempt in range(5):  # warm-up: the first /lab request renders templates and reads every extension
        try:
            get(f"{base}/lab?token={token}", timeout=60)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(2 * (attempt + 1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 with a token, its root holding explorer.ipynb and probabilities.ipynb; yields (base_url, token)"
    tmp_path = tmp_path_factory.mktemp("lab")
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    for name, cells in (("explorer", CELLS), ("probabilities", PROBABILITY_CELLS)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nbformat.write(nb, root / f"{name}.ipynb")
    # no news / update pop-ups over the page
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
               IPYTHONDIR=str(state / "ipython"), PYTHONUNBUFFERED="1")
    port, token = free_port(), secrets.token_hex(16)
    cmd = jupyter_command() + [
        "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None", "--ServerApp.terminals_enabled=False", "--allow-root"]  # CI runs as root
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, base, token, log)
        yield base, token
    finally:
        try:  # a clean shutdown also stops the kernel
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"), timeout=10)
            proc.wait(timeout=30)
        except Exception:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=20)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        print(f"jupyter log: {log}")


IMAGES_READY = """() => ['axial', 'coronal', 'sagittal'].every(p => {
    const img = document.querySelector('img.bts-image-' + p);
    return img && img.src && img.complete && img.naturalWidth > 0;
})"""


def image_src(page, plane: str) -> str:
    return page.eval_on_selector(f"img.bts-image-{plane}", "img => img.src")


def open_and_run(page, base: str, token: str, notebook: str) -> tuple:
    "Open `notebook` in JupyterLab, run all its cells, wait for the explorer's three images; the voxel it opened on"
    page.set_default_timeout(60_000)
    for attempt in range(3):  # a cold server may still be slow to serve the first page
        try:
            page.goto(f"{base}/lab/tree/{notebook}?reset&token={token}", timeout=120_000)
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                                   timeout=120_000)
            break
        except Exception:
            if attempt == 2: raise
            page.wait_for_timeout(5_000)
    # wait until the notebook's kernel is up, then run every cell
    page.wait_for_function("""() => {
        const w = window.jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return k && k.status === 'idle';
    }""", timeout=KERNEL_RUN_S * 1000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(IMAGES_READY, timeout=KERNEL_RUN_S * 1000)
    ready = page.get_by_text(re.compile(r"explorer ready at \(\d+, \d+, \d+\)"))
    ready.wait_for(timeout=KERNEL_RUN_S * 1000)
    return tuple(map(int, re.findall(r"\d+", ready.inner_text())))  # it opens on the tumour's centre


def test_explorer_renders_and_follows_a_slider_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright  # in the dev requirements; uses the system Chromium
    base, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            x, y, z = open_and_run(page, base, token, "explorer.ipynb")
            page.locator("img.bts-image-axial").scroll_into_view_if_needed()
            before_png = tmp_path / "explorer_rendered.png"
            page.screenshot(path=str(before_png), full_page=True)
            print(f"screenshot: {before_png}")
            sizes = page.eval_on_selector_all("img[class*=bts-image-]", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            assert sorted(map(tuple, sizes)) == sorted([(64, 64), (64, 48), (64, 48)])  # axial, coronal, sagittal
            readout = page.locator(".bts-slider-axial .widget-readout")
            assert readout.inner_text().strip() == str(z)

            # move the axial slider three steps with the keyboard, as a user would
            src = {p: image_src(page, p) for p in ("axial", "coronal", "sagittal")}
            handle = page.locator(".bts-slider-axial .noUi-handle").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
            page.wait_for_function("z => document.querySelector('.bts-slider-axial .widget-readout').textContent.trim() === String(z)",
                                   arg=z + 3)
            for plane in ("axial", "coronal", "sagittal"):  # the kernel redrew the slice and both crosshairs
                page.wait_for_function(f"old => document.querySelector('img.bts-image-{plane}').src !== old", arg=src[plane])
            # the kernel's readout of the crosshair voxel follows once the last of the three steps is drawn
            page.get_by_text(f"voxel (x, y, z) = ({x}, {y}, {z + 3})").wait_for()
            page.wait_for_function(IMAGES_READY)
            after_png = tmp_path / "explorer_after_slider.png"
            page.screenshot(path=str(after_png), full_page=True)
            print(f"screenshot: {after_png}")
            assert before_png.stat().st_size > 10_000 and after_png.stat().st_size > 10_000
        finally:
            browser.close()


def legend_text(page) -> str:
    return page.eval_on_selector(".bts-legend", "e => e.innerText")


def counts(legend: str) -> list:
    "The voxel counts per class in the key's line 'voxels predicted at threshold T: Edema N · ...'"
    line = re.search(r"voxels predicted at threshold [\d.]+: (.*)", legend).group(1)
    return [int(n.replace(",", "")) for n in re.findall(r"([\d,]+)(?: ·|$)", line)]


def test_threshold_slider_recolours_the_prediction_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright
    base, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            open_and_run(page, base, token, "probabilities.ipynb")
            # the still picture under the live widget: a PNG in the output of the next cell
            still = page.locator(".jp-RenderedImage img").first
            still.wait_for()
            assert still.evaluate("img => img.naturalWidth") == 3 * 5 * 64 + 2 * 4  # three planes, 5 pixels a voxel, as the widget
            readout = page.locator(".bts-threshold .widget-readout")
            assert readout.inner_text().strip() == "0.50"
            before = legend_text(page)
            assert "voxels predicted at threshold 0.50" in before and "Dice over the whole volume" in before
            before_counts, before_src = counts(before), image_src(page, "axial")
            page.locator(".bts-threshold").scroll_into_view_if_needed()
            before_png = tmp_path / "threshold_0.50.png"
            page.screenshot(path=str(before_png), full_page=True)
            print(f"screenshot: {before_png}")

            # move the threshold five steps up with the keyboard, as a user would
            handle = page.locator(".bts-threshold .noUi-handle").first
            handle.focus()
            for _ in range(5):
                handle.press("ArrowRight")
            page.wait_for_function("() => document.querySelector('.bts-threshold .widget-readout').textContent.trim() === '0.55'")
            # the kernel relabelled the volume: the key's counts and Dice, and the axial picture, changed
            page.wait_for_function("() => document.querySelector('.bts-legend').innerText.includes('threshold 0.55')")
            page.wait_for_function("old => document.querySelector('img.bts-image-axial').src !== old", arg=before_src)
            page.wait_for_function(IMAGES_READY)
            after = legend_text(page)
            assert sum(counts(after)) < sum(before_counts), (before, after)  # fewer voxels pass a higher threshold
            dice = lambda text: re.search(r"Dice over the whole volume: (.*)", text).group(1)
            assert dice(after) != dice(before)
            after_png = tmp_path / "threshold_0.55.png"
            page.screenshot(path=str(after_png), full_page=True)
            print(f"screenshot: {after_png}")
        finally:
            browser.close()
