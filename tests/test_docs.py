"""The docs site: `docs/build.py` and `docs/execute_notebooks.py`, checked in the HTML and in headless Chromium.

Two sites are built into temporary folders: the real one from `nbs/` as committed, and a small demo
project whose notebook is first executed by `docs/execute_notebooks.py` so that it carries every kind
of output (matplotlib PNG, GIF, DataFrame, widget, LaTeX, README picture). Both are served on
127.0.0.1 and every page is loaded in Chromium: no missing image, no broken internal link or anchor,
no console error, no request leaving the machine. A screenshot of each page is saved (the path is
printed; set BTS_DOCS_SCREENSHOTS=DIR to keep them).
"""
from __future__ import annotations

import functools, html, inspect, io, json, os, re, subprocess, sys, threading, time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

REPO = Path(__file__).resolve().parent.parent
NBS = REPO / "nbs"
BUILD, EXECUTE = REPO / "docs" / "build.py", REPO / "docs" / "execute_notebooks.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def run(*args, check=True, timeout=300):
    "Run `args` with this Python; fail with its output when it fails and `check`"
    t0 = time.perf_counter()
    # without pytest's marker, which makes ipykernel leave file descriptors 1 and 2 alone: run as outside tests
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    r = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    r.seconds = time.perf_counter() - t0
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def page_text(s: str) -> str:
    "The visible text of HTML `s`, whitespace collapsed"
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", s, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", s))).strip()


def code_blocks(s: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", b)) for b in re.findall(r"<pre\b[^>]*>(.*?)</pre>", s, re.S)]


def notebooks(folder: Path = NBS) -> list[Path]:
    return sorted((p for p in folder.glob("*.ipynb") if not p.name.startswith(("_", "."))),
                  key=lambda p: (p.stem != "index", p.name))


def page_name(nb: Path) -> str:
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower())[:-len(".ipynb")] + ".html"


def cells(nb: Path) -> list[dict]:
    return [dict(c, source="".join(c["source"])) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]]


def directives(src: str) -> set[str]:
    names = set()
    for line in src.splitlines():
        m = re.match(r"^\s*#\|\s*([\w-]+)", line)
        if m: names.add(m.group(1))
        elif line.strip(): break
    return names


def docstring_lines(src: str) -> set[int]:
    "Line numbers (from 1) of the docstrings in Python `src`"
    import ast
    try: tree = ast.parse(src)
    except SyntaxError: return set()
    res = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            d = node.body[0]
            if isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant) and isinstance(d.value.value, str):
                res |= set(range(d.lineno, d.end_lineno + 1))
    return res


# ----------------------------------------------------------------------------------------------------
# the real site
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    r = run(BUILD, "--out", out)
    print(f"built the site from nbs/ in {r.seconds:.1f} s:\n{r.stdout}")
    return out


def test_every_notebook_has_a_page_listed_in_notebook_order(site):
    nbs = notebooks()
    assert nbs and nbs[0].name == "index.ipynb"
    index = (site / "index.html").read_text(encoding="utf-8")
    nav = re.search(r'<nav class="sidebar".*?</nav>', index, re.S).group(0)
    listed = [h for h in re.findall(r'<li><a href="([^"#]+)"', nav)]
    lessons = ["course/" + page_name(nb) for nb in notebooks(NBS / "course") if nb.name[0].isdigit()]
    course = lessons + ["course/exercises.html", "course/glossary.html"]
    assert listed == ["index.html"] + course + [page_name(nb) for nb in nbs[1:]]   # home, the course, the reference
    assert re.findall(r'<p class="nav-section">([^<]+)</p>', nav) == ["The course", "The reference"]
    for nb in nbs: assert (site / page_name(nb)).is_file(), nb
    for page in course: assert (site / page).is_file(), page


def test_hidden_and_exported_cells_do_not_show(site):
    "The lines of `#| hide`, `#| export` and `#| default_exp` cells are not in the page (unless shown elsewhere)"
    checked = 0
    for nb in notebooks():
        cs = cells(nb)
        shown = "\n".join(c["source"] for c in cs if not directives(c["source"]) & {"hide", "export", "exporti", "default_exp"})
        page = page_text((site / page_name(nb)).read_text(encoding="utf-8"))
        for c in cs:
            if c["cell_type"] != "code" or not directives(c["source"]) & {"hide", "export", "exporti", "default_exp"}: continue
            docs = docstring_lines(c["source"])  # show_doc shows docstrings: they may be on the page
            for n, line in enumerate(c["source"].splitlines(), 1):
                line = line.strip()
                if n in docs: continue
                if line.startswith("#|") or len(line) < 12 or line in shown: continue
                assert re.sub(r"\s+", " ", line) not in page, f"{nb.name}: hidden line {line!r} is on its page"
                checked += 1
    assert checked > 10


def test_directive_lines_never_show(site):
    for nb in notebooks():
        s = (site / page_name(nb)).read_text(encoding="utf-8")
        for block in code_blocks(s):
            assert not re.search(r"^\s*#\|", block, re.M), f"{nb.name}: a `#|` line shows:\n{block}"
        prose = "\n".join(c["source"] for c in cells(nb) if c["cell_type"] == "markdown")
        if nb.stem == "index": prose += (REPO / "README.md").read_text(encoding="utf-8")
        if "#|" not in prose: assert "#|" not in s, nb.name
        if "default_exp" not in prose: assert "default_exp" not in s, nb.name


def test_exported_function_has_signature_and_docstring(site):
    from bts_course.phantom import make_phantom
    s = (site / "phantom.html").read_text(encoding="utf-8")
    m = re.search(r'<h3 id="make_phantom">.*?(<pre\b.*?</pre>)(.*?)(?:<hr|<h[1-3]\b)', s, re.S)
    assert m, "no API block for make_phantom on phantom.html"
    sig = code_blocks(m.group(1))[0]
    assert "def make_phantom(" in sig
    for name, p in inspect.signature(make_phantom).parameters.items():
        assert name in sig
        if p.default is not inspect.Parameter.empty: assert f"={p.default!r}" in sig, (name, sig)
    doc = inspect.getdoc(make_phantom).splitlines()[0].replace("`", "")
    assert re.sub(r"\s+", " ", doc) in page_text(m.group(2))


def api_block(page: str, name: str) -> str:
    "The HTML of the documentation block of `name` on `page`: from its heading to the next cell"
    m = re.search(rf'<h3 id="{name.lower()}">.*?(?=<div class="cell|<hr|<h[1-3]\b)', page, re.S)
    assert m, f"no API block for {name}"
    return m.group(0)


def table_rows(block: str) -> list[list[str]]:
    "The rows of the first table in `block`, each a list of cell texts"
    m = re.search(r"<table>(.*?)</table>", block, re.S)
    assert m, "no table"
    return [[page_text(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)]


def test_docments_give_a_parameter_table(site):
    "A public function's docments comments become a table of its parameters and return value"
    from fastcore.docments import docments
    from bts_course.data import Case, check_size
    s = (site / "data.html").read_text(encoding="utf-8")
    block = api_block(s, "check_size")
    rows = table_rows(block)
    assert rows[0] == ["Parameter", "Type", "Default", "Details"]
    dm = docments(check_size)
    assert rows[1:] == [["size", "", "", dm["size"]], ["name", "str", "'size'", dm["name"]],
                        ["Returns", "tuple", "", dm["return"]]]
    sig = code_blocks(block)[0]
    assert sig.strip() == "def check_size(size, name:str='size')->tuple:"  # the comments are in the table, not here
    rows = table_rows(api_block(s, "Case"))  # a dataclass: its fields' comments, no return row
    assert [r[0] for r in rows[1:]] == list(inspect.signature(Case).parameters)
    assert ["name", "str", "", docments(Case)["name"]] in rows
    assert rows[2] == ["label", "np.ndarray | None", "", docments(Case)["label"].replace("`", "")]  # a `|` in a type stays in its cell


MODULES_WITH_DOCMENTS = sorted(p.stem for p in (REPO / "bts_course").glob("*.py") if not p.stem.startswith("_"))  # every module


@pytest.mark.parametrize("module", MODULES_WITH_DOCMENTS)
def test_every_public_function_documents_its_parameters(module):
    "docments comments on every parameter and the return value of each public function and class, for its table"
    import importlib
    from fastcore.docments import docments
    mod = importlib.import_module(f"bts_course.{module}")
    missing, checked = [], 0
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not callable(obj) or getattr(obj, "__module__", None) != mod.__name__: continue
        if inspect.isclass(obj) and issubclass(obj, BaseException): continue  # an error: no parameters of its own
        dm = docments(obj, full=True)
        dm.pop("self", None)
        if inspect.isclass(obj): dm.pop("return", None)
        try: params = inspect.signature(obj).parameters
        except (TypeError, ValueError): params = {}
        for p in [p for p, v in params.items() if v.kind in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]:
            dm.pop(p, None)  # *args / **kwargs: passed on, documented in the docstring
        missing += [f"{name}: {p}" for p, v in dm.items() if not v.get("docment")]
        checked += 1
    assert checked, f"bts_course.{module} has no public function"
    assert not missing, f"bts_course.{module}: parameters without a docments comment:\n  " + "\n  ".join(missing)


def test_landing_page_carries_the_readme(site):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    index = page_text((site / "index.html").read_text(encoding="utf-8"))
    headings = [re.sub(r"[`*]", "", h).strip() for h in re.findall(r"^#{1,4}\s+(.+)$", readme, re.M)]
    assert headings
    for h in headings: assert h in index, h
    paragraphs = [p for p in re.split(r"\n\s*\n", readme) if p.strip() and not re.match(r"\s*[#|`<!\[>-]", p)]
    first = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", paragraphs[0])  # links keep their text
    assert re.sub(r"\s+", " ", re.sub(r"[`*]", "", first)).strip() in index


def test_explorer_page_shows_a_picture(site):
    pages = [page_name(nb) for nb in notebooks() if "explorer" in nb.stem]
    if not pages: pytest.skip("no explorer notebook yet")
    for p in pages:
        assert re.search(r'<img src="[^"]+\.png"', (site / p).read_text(encoding="utf-8")), f"{p}: no picture"


def test_notebooks_work_with_nbdev_docs():
    """`nbdev_docs` (Quarto) runs every cell that holds an import, in a namespace with only the exports: a
    cell that mixes imports with the notebook's own work fails there (or repeats slow work). Such imports
    belong in the notebook's imports cell at the top."""
    import warnings
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval, _show_docs
    bad = []
    for nb in notebooks():
        cs = NBProcessor(nb=read_nb(nb)).nb.cells
        for i, c in enumerate(cs):
            if c.cell_type != "code" or not c.source: continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not _do_eval(c): continue
            trees = c.parsed_() or []
            if (c.directives_.keys() & {"export", "exports", "exporti", "exec_doc"} or _show_docs(trees)
                    or all(type(t).__name__ in ("Import", "ImportFrom") for t in trees)): continue
            bad.append(f"{nb.name} cell {i}: {c.source.strip().splitlines()[0]}")
    assert not bad, "cells that mix imports with other code (move the imports to the imports cell):\n" + "\n".join(bad)


# ----------------------------------------------------------------------------------------------------
# a demo project with every kind of output, executed by docs/execute_notebooks.py
# ----------------------------------------------------------------------------------------------------

def nb_json(*cells_) -> dict:
    return {"cells": [{"cell_type": t, "id": f"c{i}", "metadata": {}, "source": s,
                       **({"outputs": [], "execution_count": None} if t == "code" else {})}
                      for i, (t, s) in enumerate(cells_)],
            "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def png_bytes(color=(200, 30, 30), size=(24, 16)) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, format="PNG")
    return b.getvalue()


FIG_NB = nb_json(
    ("code", "#| default_exp demo_fig"),
    ("code", "#| export\ndef shout(\n    word: str,  # what to shout\n    times: int | None = 2,  # how often\n) -> str:  # the shout\n"
             "    \"Return `word` in capitals, `times` times\"\n    return ' '.join([word.upper()] * times)"),
    ("code", "#| hide\nHIDDEN = 'hidden-cell-marker-7f3a'"),
    ("markdown", "# Figures\n> A page with every kind of output"),
    ("markdown", "## A section\n\nEnergy: $E = mc^2$, and a display:\n\n$$\\frac{2|A \\cap B|}{|A| + |B|}$$\n\n"
                 "It costs $5 and $10. See [the other page](02_other.ipynb), "
                 "and a local picture: ![a dot](images/dot.png)"),
    ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 1.5), dpi=60)\n"
             "ax.plot([0, 1], [0, 1])\nplt.show()"),
    ("code", "import io\nfrom PIL import Image as P\nfrom IPython.display import Image\n"
             "frames = [P.new('RGB', (20, 20), c) for c in ('red', 'blue')]\nb = io.BytesIO()\n"
             "frames[0].save(b, format='GIF', save_all=True, append_images=frames[1:], loop=0)\n"
             "Image(data=b.getvalue(), format='gif')"),
    ("code", "import pandas as pd\npd.DataFrame({'class': ['edema', 'core'], 'dice': [0.81, 0.62]})"),
    ("code", "import ipywidgets as w\nw.IntSlider(3)"),
    ("code", "print('printed-line-42')"),
    ("code", "#| slow\nopen('slow-cell-ran', 'w').write('x')\nraise RuntimeError('a slow cell ran')"),
    ("code", "#| docs\nprint('made-for-the-docs-5c1')"),
    ("code", "#| echo: false\nprint('echo-false-output')"),
    ("code", "#| hide\nshout('x')"),
)
OTHER_NB = nb_json(("markdown", "# Other\n> The second page"),
                   ("markdown", "Back to [a section](01_fig.ipynb#a-section) and [home](index.ipynb)."))
README = ("# Demo project\n\nA small project to check the docs builder.\n\n![a picture](docs/pic.png)\n\n"
          "Read [the figures](nbs/01_fig.ipynb) or the [settings](settings.ini).\n")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    (root / "nbs" / "images").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "settings.ini").write_text("[DEFAULT]\n", encoding="utf-8")
    (root / "README.md").write_text(README, encoding="utf-8")
    (root / "docs" / "pic.png").write_bytes(png_bytes((30, 90, 200), (60, 30)))
    (root / "nbs" / "images" / "dot.png").write_bytes(png_bytes())
    (root / "nbs" / "index.ipynb").write_text(json.dumps(nb_json(("markdown", "{{< include ../README.md >}}"))), encoding="utf-8")
    (root / "nbs" / "01_fig.ipynb").write_text(json.dumps(FIG_NB), encoding="utf-8")
    (root / "nbs" / "02_other.ipynb").write_text(json.dumps(OTHER_NB), encoding="utf-8")
    r = run(EXECUTE, root / "nbs" / "01_fig.ipynb")
    print(f"executed the demo notebook in {r.seconds:.1f} s")
    site = root / "site"
    r = run(BUILD, "--nbs", root / "nbs", "--out", site)
    print(f"built the demo site in {r.seconds:.1f} s")
    return root, site


def test_execute_saves_outputs_and_skips_flagged_cells(demo):
    root, _ = demo
    cs = json.loads((root / "nbs" / "01_fig.ipynb").read_text(encoding="utf-8"))["cells"]
    mimes = [set(o.get("data", {})) for c in cs if c["cell_type"] == "code" for o in c["outputs"]]
    assert any("image/png" in m for m in mimes) and any("image/gif" in m for m in mimes)
    assert any("text/html" in m for m in mimes)
    assert any("application/vnd.jupyter.widget-view+json" in m for m in mimes)
    slow = next(c for c in cs if "#| slow" in "".join(c["source"]))
    assert slow["outputs"] == [] and not (root / "nbs" / "slow-cell-ran").exists()
    assert all(c.get("execution_count") is None for c in cs if c["cell_type"] == "code")  # cleaned as nbdev_clean does
    printed = next(c for c in cs if "printed-line-42" in "".join(c["source"]))
    assert "".join(printed["outputs"][0]["text"]) == "printed-line-42\n"
    docs = next(c for c in cs if "#| docs" in "".join(c["source"]))  # nbdev_test skips it; the docs need it
    assert "".join(docs["outputs"][0]["text"]) == "made-for-the-docs-5c1\n"


def test_docs_cells_run_for_the_docs_only(tmp_path):
    """`#| docs` cells (what only the docs show, e.g. the full `bts demo` run) are skipped by `nbdev_test`, run by
    `docs/execute_notebooks.py`, and skipped by it too with `--no-docs`"""
    from nbdev.config import get_config
    assert "docs" in get_config(path=REPO).tst_flags.split()  # the flag nbdev_test skips
    nb = tmp_path / "docs_flag.ipynb"
    nb.write_text(json.dumps(nb_json(("code", "x = 6 * 7"),
                                     ("code", "#| docs\nopen('docs-cell-ran', 'w').write('x')\nprint('docs-cell', x)"))), encoding="utf-8")
    nbdev_test = Path(sys.executable).parent / "nbdev_test"
    r = subprocess.run([str(nbdev_test), "--path", str(nb)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "docs-cell-ran").exists()  # nbdev_test did not run it
    run(EXECUTE, nb, "--no-docs", "--out", tmp_path / "quick")
    assert not (tmp_path / "docs-cell-ran").exists()
    assert cells(tmp_path / "quick" / nb.name)[1].get("outputs") == []
    run(EXECUTE, nb)
    assert (tmp_path / "docs-cell-ran").exists()
    out = cells(nb)[1]["outputs"]
    assert [(o["name"], "".join(o["text"])) for o in out] == [("stdout", "docs-cell 42\n")]


def test_execute_keeps_native_stderr_out_of_outputs(tmp_path):
    """What native code writes to file descriptor 2 -- TensorFlow's C++ start-up banner -- is not saved in the
    notebook; Python's own stderr (warnings, tracebacks) still is"""
    nb = tmp_path / "noise.ipynb"
    nb.write_text(json.dumps(nb_json(
        ("code", "import os, sys\nos.write(2, b'native-fd2-line\\n')\nprint('python-stderr-line', file=sys.stderr)"),
        ("code", "import tensorflow as tf\nprint('tensorflow', tf.__version__.split('.')[0])"))), encoding="utf-8")
    run(EXECUTE, nb)
    saved = json.loads(nb.read_text(encoding="utf-8"))
    texts = ["".join(o.get("text", "")) for c in saved["cells"] for o in c["outputs"]]
    assert texts[0] == "python-stderr-line\n" and re.fullmatch(r"tensorflow \d+\n", texts[1]) and len(texts) == 2, texts
    sys.path.insert(0, str(REPO / "docs"))
    try: from execute_notebooks import machine_noise
    finally: sys.path.remove(str(REPO / "docs"))
    assert machine_noise(saved) == []


def test_execute_fails_loudly_and_leaves_the_notebook(tmp_path):
    nb = tmp_path / "bad.ipynb"
    nb.write_text(json.dumps(nb_json(("code", "x = 1"), ("code", "raise ValueError('boom-1234')"))), encoding="utf-8")
    before = nb.read_bytes()
    r = run(EXECUTE, nb, check=False)
    assert r.returncode == 1 and "boom-1234" in r.stderr and "bad.ipynb" in r.stderr
    assert nb.read_bytes() == before


def test_demo_pages_show_every_kind_of_output(demo):
    _, site = demo
    s = (site / "fig.html").read_text(encoding="utf-8")
    text = page_text(s)
    imgs = re.findall(r'<img src="([^"]+)"', s)
    assert any(i.endswith(".png") for i in imgs) and any(i.endswith(".gif") for i in imgs)
    assert "_assets/nbs/images/dot.png" in imgs
    for i in imgs: assert (site / i).is_file(), i
    assert "<table" in s and "edema" in text  # the DataFrame
    assert "<math" in s and "$E" not in s and "It costs $5 and $10." in text  # LaTeX as MathML, prices left alone
    assert 'href="other.html"' in s
    assert "printed-line-42" in text and "echo-false-output" in text and "print('echo-false-output')" not in text
    assert "hidden-cell-marker-7f3a" not in s and "#|" not in s and "IntSlider(" not in s
    assert re.search(r'<h3 id="shout">', s) and any("def shout(" in b for b in code_blocks(s)) and "Return word in capitals, times times" in text
    assert table_rows(api_block(s, "shout"))[1:] == [["word", "str", "", "what to shout"], ["times", "int | None", "2", "how often"],
                                                     ["Returns", "str", "", "the shout"]]
    assert "made-for-the-docs-5c1" in text
    other = (site / "other.html").read_text(encoding="utf-8")
    assert 'href="fig.html#a-section"' in other and 'id="a-section"' in s
    index = (site / "index.html").read_text(encoding="utf-8")
    assert '<img src="_assets/docs/pic.png"' in index and 'href="fig.html"' in index
    assert "https://github.com/" in index and "/blob/main/settings.ini" in index


def test_build_fails_loudly(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    bad = nb_json(("markdown", "# Bad\n> broken"), ("markdown", "![missing](nowhere.png) [gone](03_gone.ipynb)"))
    (nbs / "01_bad.ipynb").write_text(json.dumps(bad), encoding="utf-8")
    out = tmp_path / "site"
    r = run(BUILD, "--nbs", nbs, "--out", out, check=False)
    assert r.returncode == 1 and "nowhere.png" in r.stderr and "03_gone.ipynb" in r.stderr
    assert not out.exists()
    err = nb_json(("code", "1/0"))
    err["cells"][0]["outputs"] = [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                                   "traceback": []}]
    (nbs / "01_bad.ipynb").write_text(json.dumps(err), encoding="utf-8")
    r = run(BUILD, "--nbs", nbs, "--out", out, check=False)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr and "01_bad.ipynb" in r.stderr


# ----------------------------------------------------------------------------------------------------
# in the browser
# ----------------------------------------------------------------------------------------------------

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


def serve(folder: Path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def browse(site: Path, shots: Path) -> dict:
    "Load every page of `site` in Chromium; return the problems found and what was seen"
    from playwright.sync_api import sync_playwright
    srv = serve(site)
    base = f"http://127.0.0.1:{srv.server_port}/"
    problems, external, ids, links, n_imgs = [], [], {}, [], 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})

            def route(r):
                if urlparse(r.request.url).hostname == "127.0.0.1": return r.continue_()
                external.append(r.request.url)
                return r.abort()
            ctx.route("**/*", route)
            page = ctx.new_page()
            current = {}
            page.on("console", lambda m: m.type == "error" and problems.append(f"{current['p']}: console error: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"{current['p']}: script error: {e}"))
            page.on("requestfailed", lambda r: urlparse(r.url).hostname == "127.0.0.1"
                    and problems.append(f"{current['p']}: request failed: {r.url} {r.failure}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(f"{current['p']}: {r.status} for {r.url}"))
            for f in sorted(site.rglob("*.html")):
                rel = f.relative_to(site).as_posix()
                current["p"] = rel
                resp = page.goto(base + rel, wait_until="load")
                if resp is None or resp.status != 200: problems.append(f"{rel}: status {resp and resp.status}")
                bad = page.eval_on_selector_all(
                    "img", "els => els.filter(e => !e.complete || e.naturalWidth === 0).map(e => e.getAttribute('src'))")
                problems += [f"{rel}: image does not display: {b}" for b in bad]
                n_imgs += page.eval_on_selector_all("img", "els => els.length")
                ids[rel] = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
                links += [(rel, h) for h in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")]
                page.screenshot(path=str(shots / (rel.replace("/", "__") + ".png")), full_page=True)
            browser.close()
        for rel, href in links:  # every same-site link answers 200, and its #fragment names an element there
            url, frag = urldefrag(href)
            if urlparse(url).netloc != urlparse(base).netloc: continue
            target = url[len(base):] or "index.html"
            if target not in ids:
                try: status = urllib.request.urlopen(url, timeout=10).status
                except Exception as e: status = e
                if status != 200: problems.append(f"{rel}: link {href} -> {status}")
            elif frag and frag not in ids[target]: problems.append(f"{rel}: link {href}: no element with id {frag!r}")
    finally:
        srv.shutdown()
    return dict(problems=problems, external=external, pages=len(ids), images=n_imgs, links=len(links))


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("BTS_DOCS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"): pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("playwright")


@pytest.mark.parametrize("which", ["site", "demo"])
def test_every_page_in_chromium(which, site, demo, shots, chromium):
    folder = site if which == "site" else demo[1]
    d = shots / which
    d.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    seen = browse(folder, d)
    print(f"{which}: {seen['pages']} pages, {seen['images']} images, {seen['links']} links in "
          f"{time.perf_counter() - t0:.1f} s; screenshots in {d}")
    assert not seen["problems"], "\n".join(seen["problems"])
    assert not seen["external"], f"requests leaving the machine: {seen['external']}"
    assert seen["pages"] == len(list(folder.rglob("*.html")))
    assert len(list(d.glob("*.png"))) == seen["pages"]
    if which == "demo": assert seen["images"] >= 4


def test_landing_page_says_where_to_start(site):
    "The front page starts a learner from the course track, lesson by lesson in order; then the replay; then the reference"
    html = (site / "index.html").read_text(encoding="utf-8")
    text = page_text(html)
    assert text.index("Where to start") < text.index("Learn 3D brain-tumour segmentation")   # before the README
    start = html.index('id="where-to-start"')                          # the section, not its line in the contents
    links = re.findall(r'href="((?:course/)?[a-z0-9_]+\.html)', html[start: html.index("Here for the tools", start)])
    lessons = ["course/" + page_name(nb) for nb in notebooks(NBS / "course") if nb.name[0].isdigit()]
    assert links[:len(lessons)] == lessons, links   # every lesson, in the course's order, first
    assert links[len(lessons):][:2] == ["lessons.html", "util.html"]
    sections = [l for l in links[len(lessons) + 2:] if l not in ("exercises.html", "checking.html", "checks.html")]
    order = [page_name(nb) for nb in notebooks()]
    assert [order.index(l) for l in sections] == sorted(order.index(l) for l in sections), sections   # in reading order

# ----------------------------------------------------------------------------------------------------
# a learner finding their way: search, previous / next, a phone, the lessons' notebooks, the glossary
# ----------------------------------------------------------------------------------------------------

COURSE_ORDER = ["index.html"] + ["course/" + page_name(nb) for nb in notebooks(NBS / "course") if nb.name[0].isdigit()]


def test_lesson_pages_offer_their_notebook_with_its_exercises(site):
    from bts_course.lessons import lesson_exercises, lesson_paths
    for lesson in lesson_paths():
        page = (site / "course" / page_name(lesson)).read_text(encoding="utf-8")
        link = re.search(r'<p class="download"[^>]*><a href="([^"]+)" download>', page)
        assert link and link.group(1) == lesson.name, lesson.name
        copy = json.loads((site / "course" / lesson.name).read_text(encoding="utf-8"))
        assert copy["metadata"]["bts_course"]["exercises"] == lesson_exercises(lesson)
        assert not any("".join(c["source"]).startswith("#| docs") for c in copy["cells"])  # runs without ../shared


def test_the_glossary_defines_the_terms_and_lessons_link_to_it(site):
    glossary = page_text((site / "course" / "glossary.html").read_text(encoding="utf-8"))
    for term in ("FLAIR", "T1-Gd", "Voxel", "NIfTI", "BraTS regions", "Patch", "Standardisation", "Dice coefficient",
                 "Soft dice", "Sensitivity", "Specificity", "HD95", "Calibration", "ECE", "Test-time augmentation"):
        assert term in glossary, term
    links = [l for p in (site / "course").glob("*.html") if p.name != "glossary.html"
             for l in re.findall(r'href="glossary\.html#([\w-]+)"', p.read_text(encoding="utf-8"))]
    assert len(set(links)) >= 25 and {"flair", "soft-dice", "hd95", "sensitivity"} <= set(links)


def test_titles_render_inline_code_and_show_no_backticks_or_directives(site):
    for f in site.rglob("*.html"):
        text = f.read_text(encoding="utf-8")
        head = re.search(r'<header class="page-title">(.*?)</header>', text, re.S)
        if head: assert "`" not in head.group(1), f
        nav = re.search(r'<nav class="sidebar".*?</nav>', text, re.S).group(0)
        assert "`" not in nav and "`" not in re.search(r"<title>(.*?)</title>", text).group(1), f
        assert not re.search(r"^\s*#\|", page_text(text), re.M), f


def test_a_broken_link_or_an_output_the_site_cannot_show_is_named(tmp_path):
    nbs = tmp_path / "nbs"
    (nbs / "course").mkdir(parents=True)
    (nbs / "index.ipynb").write_text(json.dumps(nb_json(("markdown", "# Home\n> home"), ("markdown", "[on](course/01_a.ipynb#nowhere)"))), encoding="utf-8")
    odd = nb_json(("markdown", "# 1. A\n> a lesson"), ("code", "x"))
    odd["cells"][1]["outputs"] = [{"output_type": "display_data", "data": {"application/x-unknown": "?"}, "metadata": {}}]
    (nbs / "course" / "01_a.ipynb").write_text(json.dumps(odd), encoding="utf-8")
    r = run(BUILD, "--nbs", nbs, "--out", tmp_path / "site", check=False)
    assert r.returncode == 1, r.stdout
    assert "index.html: 'course/a.html#nowhere': no id 'nowhere' in course/a.html" in r.stderr, r.stderr
    assert re.search(r"course/a\.html: output cell-\d+-output-0 has no form the site can show \(application/x-unknown\)", r.stderr)


@pytest.fixture(scope="module")
def learner_page(site, chromium):
    "A Chromium page over the served site: yields (page, base_url, console errors)"
    from playwright.sync_api import sync_playwright
    srv = serve(site)
    errors = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, f"http://127.0.0.1:{srv.server_port}/", errors
            browser.close()
    finally:
        srv.shutdown()


@pytest.mark.parametrize("query, pages", [("soft dice", ["course/dice_and_soft_dice.html", "metrics.html"]),
                                          ("HD95", ["course/brats_regions_and_hd95.html", "scores.html"])])
def test_search_finds_a_term_in_the_lesson_and_the_reference(learner_page, query, pages):
    page, base, errors = learner_page
    page.goto(base + "course/the_data.html")
    page.fill(".pagefind-ui__search-input", query)
    page.wait_for_selector(".pagefind-ui__result-link", timeout=30_000)
    page.wait_for_timeout(500)
    found = [urlparse(h).path.lstrip("/") for h in page.eval_on_selector_all(
        ".pagefind-ui__result-link", "els => els.map(e => e.getAttribute('href'))")]
    for p in pages: assert p in found, (query, found)
    page.click(f'.pagefind-ui__result-link[href="/{pages[0]}"]')
    page.wait_for_load_state("load")
    assert urlparse(page.url).path == "/" + pages[0]
    assert not errors, errors


def test_previous_and_next_walk_the_course_in_order(learner_page):
    page, base, errors = learner_page
    page.goto(base + COURSE_ORDER[0])
    walked = [COURSE_ORDER[0]]
    for _ in COURSE_ORDER[1:]:
        page.click(".prev-next a.next")
        page.wait_for_load_state("load")
        walked.append(urlparse(page.url).path.lstrip("/"))
    assert walked == COURSE_ORDER
    page.click(".prev-next a.prev")
    page.wait_for_load_state("load")
    assert urlparse(page.url).path.lstrip("/") == COURSE_ORDER[-2]
    assert not errors, errors


def test_on_a_phone_the_content_comes_before_the_navigation(learner_page, site):
    page, base, errors = learner_page
    page.set_viewport_size({"width": 400, "height": 800})
    try:
        wide = []
        for f in sorted(site.rglob("*.html")):  # no page scrolls sideways: wide code, tables and outputs scroll in place
            page.goto(base + f.relative_to(site).as_posix())
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 401: wide.append((f.relative_to(site).as_posix(), width))
        assert not wide, wide
        for p in ("index.html", "course/dice_and_soft_dice.html", "metrics.html"):
            page.goto(base + p)
            first = page.locator("main > *").first.bounding_box()  # the page's own first block: its title, or its first words
            nav = page.locator("nav.sidebar").bounding_box()
            assert first["y"] < 400 and nav["y"] > first["y"] + first["height"], (p, first, nav)  # seen without scrolling
            page.click("a.to-contents")  # one tap from the header to the contents
            assert page.evaluate("document.querySelector('nav.sidebar').getBoundingClientRect().top") < 400
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
    assert not errors, errors
