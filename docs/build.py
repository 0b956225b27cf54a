#!/usr/bin/env python
"""Build the docs site from the notebooks in `nbs/`, as saved with their outputs, without Quarto.

    .venv/bin/python docs/build.py [--out site] [--nbs nbs]

Every notebook goes through nbdev's own docs processors -- the ones `nbdev_docs` runs before handing
the notebooks to Quarto: `#| hide`, `#| export` and `#| default_exp` cells are removed, a `show_doc`
(signature + docstring) is added after every exported function and class, the title cell becomes the
page title. `show_doc` also gets a table of the parameters and the return value, from their docments
comments (`show_doc_with_tables`), as nbdev showed them before it moved the comments into the signature. The processed notebook is then written as one static HTML page: Markdown with
markdown-it-py, code with Pygments, LaTeX as MathML with latex2mathml, figures and GIFs from the saved
outputs as image files. The pages need no JavaScript and fetch nothing from the network.

The landing page is `nbs/index.ipynb`, whose only cell includes the README with Quarto's
`{{< include ../README.md >}}` shortcode (expanded here, by Quarto under `nbdev_docs`).

Any error -- an error output saved in a notebook, an exported cell that fails, a link or image that
points at nothing -- stops the build with exit status 1 and a message; the old site is left as it was.
"""
from __future__ import annotations

import argparse, ast, base64, html, inspect, json, os, posixpath, re, shutil, sys, tempfile, time, warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
DOCS = Path(__file__).resolve().parent
MARKER = ".bts-docs-site"  # written into every site we build, so a rebuild may replace it
COURSE = "course"  # the course track's folder in nbs/: its lessons come first in the sidebar, each with its notebook to download


class BuildError(Exception):
    "The site cannot be built as the notebooks stand"


# ----------------------------------------------------------------------------------------------------
# nbdev processing
# ----------------------------------------------------------------------------------------------------

_DOC_DIRECTIVES = {"export", "exports", "exporti", "exec_doc"}


def _only_imports(cell) -> bool:
    trees = cell.parsed_() if cell.cell_type == "code" else None
    return bool(trees) and all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees)


def _processors():
    "nbdev's docs processors, with `exec_show_docs` limited to exported cells, pure imports and `show_doc`"
    from nbdev import processors as P

    class exec_exports_only(P.exec_show_docs):
        """nbdev runs any cell that holds an import, even one that also computes (and warns). We run
        only what `show_doc` needs, so the build does not repeat the notebook's work."""
        def __call__(self, cell):
            if cell.cell_type != "code" or not cell.source: return
            d = getattr(cell, "directives_", None) or {}
            if not (d.keys() & _DOC_DIRECTIVES or _only_imports(cell) or P._show_docs(cell.parsed_() or [])): return
            return super().__call__(cell)

    class DocsFilter(P.FilterDefaults):
        def base_procs(self):
            return [exec_exports_only if p is P.exec_show_docs else p for p in super().base_procs()]

    return DocsFilter()


# show_doc with a parameter table: this fastcore/nbdev pair prints docments comments inside the signature
# only, so a function's parameters get no table. The build renders them as nbdev's older show_doc did.

def _table_cell(x) -> str:
    "`x` as the text of one Markdown table cell: one line, pipes escaped"
    return re.sub(r"\s+", " ", str(x)).strip().replace("|", "\\|")


def _annotation(a) -> str:
    if a is inspect.Parameter.empty: return ""
    if isinstance(a, str): return a
    if isinstance(a, type): return a.__qualname__
    return inspect.formatannotation(a)


def _default(d) -> str:
    if d is inspect.Parameter.empty: return ""
    r = getattr(d, "__name__", None) if callable(d) else None
    r = r or repr(d)
    return "" if r == "<factory>" else f"`{r}`"


def _library_twin(sym):
    """The object of the library named as `sym`, when exactly one module of it defines that name. The docs
    processors run exported cells in a shell, where a class has no source file for docments to read."""
    import importlib
    from nbdev.config import get_config
    qual = getattr(sym, "__qualname__", None)
    if not qual: return None
    try: syms = importlib.import_module(f"{get_config().lib_name}._modidx").d["syms"]
    except Exception: return None
    hits = [mod for mod, names in syms.items() if f"{mod}.{qual}" in names]
    if len(hits) != 1: return None
    obj = importlib.import_module(hits[0])
    for part in qual.split("."): obj = getattr(obj, part, None)
    return obj


def parameter_table(sym) -> str:
    """A Markdown table of `sym`'s parameters and return value (type, default, docments comment), or ""
    when it documents none of them"""
    from fastcore.docments import docments

    def read(o):
        try: return docments(o, full=True)
        except Exception: return {}  # not a function or class: nothing to tabulate
    def documented(d): return any(v.get("docment") for v in d.values())
    dm = read(sym)
    if not documented(dm):  # a class run in the docs shell has no source to read the comments from
        twin = _library_twin(sym)
        if twin is not None and twin is not sym: dm = read(twin)
    if not documented(dm): return ""
    dm.pop("self", None)
    ret = dm.pop("return", None) or {}
    if inspect.isclass(sym): ret = {}  # a class returns an instance of itself
    rows = ["| Parameter | Type | Default | Details |", "| --- | --- | --- | --- |"]
    for name, v in dm.items():
        kind = v.get("kind")
        star = "*" if kind == inspect.Parameter.VAR_POSITIONAL else "**" if kind == inspect.Parameter.VAR_KEYWORD else ""
        rows.append(f"| `{star}{name}` | {_table_cell(_annotation(v.get('anno', inspect.Parameter.empty)))} | "
                    f"{_table_cell(_default(v.get('default', inspect.Parameter.empty)))} | {_table_cell(v.get('docment') or '')} |")
    anno = _annotation(ret.get("anno", inspect.Parameter.empty))
    if ret.get("docment") or anno:
        rows.append(f"| **Returns** | {_table_cell(anno)} | | {_table_cell(ret.get('docment') or '')} |")
    return "\n".join(rows)


@contextmanager
def show_doc_with_tables():
    "While in this block, `show_doc` shows a signature without comments, the docstring, then a parameter table"
    import nbdev.showdoc as sd
    from fastcore.docments import DocmentText

    class Signature(DocmentText):
        "nbdev's signature without the docments comments, which the table shows"
        @property
        def params(self): return [(fmt, "") for fmt, _ in super().params]
        @property
        def _ret_str(self): return super()._ret_str.split(" # ", 1)[0]

        def __str__(self):  # on one line when it fits; a class as a class
            s = super().__str__()
            if inspect.isclass(self.obj) and s.startswith("def "):
                s = "class " + s[4:].replace(")->None:", "):", 1)
            flat = s.replace("(\n    ", "(", 1).replace("\n)", ")", 1).replace("\n    ", " ")
            return flat if "\n" not in flat and len(flat) <= self.maxline else s

    class TableRenderer(sd.BasicMarkdownRenderer):
        def __init__(self, sym, name=None, title_level=3, maxline=110):
            super().__init__(sym, name=name, title_level=title_level, maxline=maxline)
            self.table = parameter_table(self.sym)
            if self.table or inspect.isclass(self.sym): self.dm = Signature(self.sym, maxline=maxline, docstring=False)

        def _repr_markdown_(self):
            md = super()._repr_markdown_()
            return f"{md}\n\n{self.table}\n" if self.table else md

    old = sd.BasicMarkdownRenderer
    sd.BasicMarkdownRenderer = TableRenderer  # show_doc's default renderer, looked up when it is called
    try: yield
    finally: sd.BasicMarkdownRenderer = old


@contextmanager
def _env(**kw):
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update(kw)
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


@contextmanager
def _native_stderr_captured():
    """File descriptor 2 into a temporary file while in this block (TensorFlow's C++ start-up lines, printed when
    the docs processors import a module that imports it); yields a function that returns what was written"""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        def written() -> str:
            sys.stderr.flush()
            log.seek(0)
            return log.read().decode(errors="replace")
        try: yield written
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def saved_errors(nb_json: dict) -> list[str]:
    "One line per error output saved in the notebook `nb_json`"
    res = []
    for i, c in enumerate(nb_json.get("cells", [])):
        for o in c.get("outputs", []) or []:
            if o.get("output_type") == "error":
                res.append(f"cell {i}: {o.get('ename', '?')}: {o.get('evalue', '')}".strip())
    return res


def process_notebook(path: Path, docs_filter):
    "The notebook at `path` after nbdev's docs processors (an execnb `AttrDict`)"
    from execnb.nbio import read_nb
    nb = read_nb(path)
    errs = saved_errors(json.loads(path.read_text(encoding="utf-8")))
    if errs:
        raise BuildError(f"{path}: saved with error outputs ({'; '.join(errs)}); fix the notebook and re-run "
                         f"`.venv/bin/python docs/execute_notebooks.py {path.name}`")
    with _env(IN_TEST="1"), warnings.catch_warnings(), show_doc_with_tables(), _native_stderr_captured() as written:
        warnings.simplefilter("ignore")
        try: docs_filter(nb)
        except Exception as e:
            log = "\n".join(written().strip().splitlines()[-15:])
            raise BuildError(f"{path}: nbdev's docs processing failed: {e}"
                             + (f"\n--- what it wrote to stderr (last lines) ---\n{log}" if log else "")) from e
    return nb


# ----------------------------------------------------------------------------------------------------
# Markdown, code and math
# ----------------------------------------------------------------------------------------------------

def _highlight(code: str, lang: str = "python", attrs=None) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound
    try: lexer = get_lexer_by_name((lang or "text").strip().split()[0] if (lang or "").strip() else "text")
    except ClassNotFound: lexer = get_lexer_by_name("text")
    body = highlight(code, lexer, HtmlFormatter(nowrap=True))
    return f'<pre class="highlight"><code>{body}</code></pre>\n'


def _math(tex: str, display: bool) -> str:
    from latex2mathml.converter import convert
    try: return convert(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # show the source rather than lose it
        print(f"warning: cannot convert LaTeX {tex!r} to MathML ({e}); shown as code", file=sys.stderr)
        tag = "pre" if display else "code"
        return f'<{tag} class="math-source">{html.escape(tex)}</{tag}>'


def markdown_renderer():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.attrs import attrs_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.footnote import footnote_plugin
    md = MarkdownIt("commonmark", {"html": True, "highlight": _highlight}).enable(["table", "strikethrough"])
    # Pandoc's rules: no space inside the dollars, no digit after the closing one ("$5 and $10" is not math)
    md.use(dollarmath_plugin, allow_space=False, allow_digits=False, double_inline=True,
           renderer=lambda content, info: _math(content, info.get("display_mode", False)))
    md.use(attrs_plugin)  # Pandoc attributes: [source](url){target="_blank"}
    md.use(footnote_plugin)
    return md


_re_div_open = re.compile(r"^(:{3,})\s*\{([^}]*)\}\s*$")
_re_div_close = re.compile(r"^:{3,}\s*$")


def quarto_divs(src: str) -> str:
    "Turn Quarto fenced divs (`::: {.callout-note}` ... `:::`) into HTML divs around Markdown"
    out = []
    for line in src.splitlines():
        m = _re_div_open.match(line)
        if m:
            classes = [a[1:] for a in m.group(2).split() if a.startswith(".")]
            ident = [a[1:] for a in m.group(2).split() if a.startswith("#")]
            idattr = f' id="{html.escape(ident[0])}"' if ident else ""
            out += ["", f'<div class="{html.escape(" ".join(classes))}"{idattr}>', ""]
        elif _re_div_close.match(line): out += ["", "</div>", ""]
        else: out.append(line)
    return "\n".join(out)


def pandoc_id(text: str) -> str:
    "Pandoc's automatic heading identifier, the one Quarto and nbdev's doc links use"
    s = re.sub(r"[^\w\s.-]", "", text.strip().lower())
    s = re.sub(r"\s+", "-", s)
    s = re.sub(r"^[^a-z]+", "", s)
    return s or "section"


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


_re_heading = re.compile(r"<h([1-6])((?:\s[^>]*)?)>(.*?)</h\1>", re.S)


def add_heading_ids(body: str):
    "Give every heading an id (Pandoc style, unique in the page); return the body and its table of contents"
    seen, toc = set(), []

    def fix(m):
        level, attrs, inner = m.group(1), m.group(2) or "", m.group(3)
        idm = re.search(r'\sid="([^"]*)"', attrs)
        if idm: ident = idm.group(1)
        else:
            base = ident = pandoc_id(_text(inner))
            n = 1
            while ident in seen: ident, n = f"{base}-{n}", n + 1
            attrs += f' id="{ident}"'
        seen.add(ident)
        if level in "23": toc.append((int(level), ident, _text(inner).strip()))
        return f'<h{level}{attrs}><a class="anchor" href="#{ident}" aria-label="Link to this section" data-pagefind-ignore>#</a>{inner}</h{level}>'

    return _re_heading.sub(fix, body), toc


# ----------------------------------------------------------------------------------------------------
# The site
# ----------------------------------------------------------------------------------------------------

_MEDIA = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".mp4", ".webm", ".pdf", ".ico"}
_IMG_MIME = {"image/png": "png", "image/gif": "gif", "image/jpeg": "jpg", "image/webp": "webp"}
_re_scheme = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//|#)")
_re_tag = re.compile(r"<[a-zA-Z][^<>]*>")
_re_url_attr = re.compile(r"""(\s(src|href|poster)\s*=\s*)(["'])(.*?)\3""", re.S | re.I)
_re_include = re.compile(r"^[ \t]*\{\{<\s*include\s+(\S+?)\s*>\}\}[ \t]*$", re.M)
_re_ansi = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")
_re_widget_repr = re.compile(r"^[A-Za-z_][\w.]*\(")


def _plain(text: str) -> str:
    "A title as plain text, for the sidebar and the browser's tab: no backticks or emphasis marks"
    return re.sub(r"[`*]", "", str(text))


def index_for_search(site: Path) -> None:
    "Index the built pages for search with Pagefind (`pagefind/` in the site: the index and its UI, served as files)"
    import subprocess
    try:
        r = subprocess.run([sys.executable, "-m", "pagefind", "--site", str(site), "--silent"], capture_output=True,
                           text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e: raise BuildError(f"pagefind could not index the site: {e}") from e
    if r.returncode != 0 or not (site / "pagefind" / "pagefind-ui.js").is_file():
        why = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no pagefind/pagefind-ui.js written"]
        raise BuildError(f"pagefind could not index the site ({why[0]}); install it with pip install 'pagefind[bin]'")


def _join(x) -> str:
    if x is None: return ""
    return "".join(x) if isinstance(x, (list, tuple)) else str(x)


def _cell_options(source: str):
    "Quarto cell options (`#| key: value`) at the top of `source`, and the code without any `#|` line"
    opts, lines = {}, source.splitlines()
    for line in lines:
        m = re.match(r"^\s*#\s*\|\s*([\w-]+)\s*:\s*(.*?)\s*$", line)
        if m:
            import yaml
            try: opts[m.group(1)] = yaml.safe_load(m.group(2)) if m.group(2) else None
            except Exception: opts[m.group(1)] = m.group(2)
        elif line.strip() and not re.match(r"^\s*#\s*\|", line): break
    code = "\n".join(l for l in lines if not re.match(r"^\s*#\|", l)).strip("\n")
    return opts, code


def _false(v) -> bool:
    return v is False or str(v).lower() == "false"


class Site:
    def __init__(self, nbs: Path, out: Path):
        from nbdev.config import get_config
        cfg = get_config(path=REPO)
        self.nbs, self.root, self.out = nbs.resolve(), nbs.resolve().parent, out
        self.title = cfg.get("title") or cfg.lib_name
        self.description = cfg.get("description", "")
        host = cfg.get("doc_host", "")  # nbdev's doc links are absolute: {doc_host}{doc_baseurl}/page.html#name
        self.doc_url = f"{host}{cfg.get('doc_baseurl', '')}".rstrip("/") + "/" if host else None
        self.git_url, self.branch = cfg.get("git_url", "").rstrip("/"), cfg.get("branch", "main")
        self.md = markdown_renderer()
        self.pages: dict[Path, str] = {}  # notebook -> page path in the site (posix)
        self.assets: dict[Path, str] = {}
        self.errors: list[str] = []

    # -- notebooks and pages -------------------------------------------------------------------------
    def notebooks(self) -> list[Path]:
        "The notebooks in reading order: the landing page, the course track (`course/`), then the reference; `_` and `.` names skipped"
        return [nb for _, nbs in self.sections() for nb in nbs]

    def sections(self) -> list[tuple[str, list[Path]]]:
        """The sidebar's sections, in reading order: the landing page alone; "The course": the numbered lessons of
        `course/`, then its other pages (doing the exercises, the glossary); "The reference": every other notebook"""
        def keep(p):
            return not any(part.startswith(("_", ".")) for part in p.relative_to(self.nbs).parts)
        nbs = sorted((p for p in self.nbs.rglob("*.ipynb") if keep(p)),
                     key=lambda p: (p.relative_to(self.nbs).parent.parts, p.stem != "index", p.name))
        course = [p for p in nbs if p.parent == self.nbs / COURSE]
        course = [p for p in course if p.name[0].isdigit()] + [p for p in course if not p.name[0].isdigit()]
        index = [p for p in nbs if p.parent == self.nbs and p.stem == "index"]
        rest = [p for p in nbs if p not in course and p not in index]
        return [(name, group) for name, group in (("", index), ("The course", course), ("The reference", rest)) if group]

    def page_of(self, nb: Path) -> str:
        from nbdev.doclinks import _nbpath2html
        return _nbpath2html(nb.relative_to(self.nbs)).as_posix()

    # -- links and files -----------------------------------------------------------------------------
    def rel(self, target: str, page: str) -> str:
        return posixpath.relpath(target, posixpath.dirname(page) or ".")

    def copy_asset(self, src: Path) -> str:
        if src not in self.assets:
            dest = f"_assets/{src.relative_to(self.root).as_posix()}"  # mirrors the project, so no clashes
            (self.out / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, self.out / dest)
            self.assets[src] = dest
        return self.assets[src]

    def rewrite_url(self, url: str, base: Path, page: str, kind: str) -> str:
        "`url` as written in a file in folder `base`, as a link from `page` in the site"
        if not url: return url
        if self.doc_url and url.startswith(self.doc_url):  # nbdev's doc links point at the published site
            path, sep, frag = url[len(self.doc_url):].partition("#")
            return self.rel(path or "index.html", page) + sep + frag
        if _re_scheme.match(url): return url
        if url.startswith("/"):
            self.errors.append(f"{page}: root-relative {kind} {url!r} (write it relative to the file)")
            return url
        path, sep, frag = url.partition("#")
        path = unquote(path.split("?")[0])
        target = (base / path).resolve()
        if not target.exists() and target.is_relative_to(self.nbs):  # a link to a page, as Quarto allows
            name = target.relative_to(self.nbs).as_posix()
            if name in self.pages.values(): return self.rel(name, page) + sep + frag
        if not target.exists():
            self.errors.append(f"{page}: {kind} {url!r} points at {target}, which does not exist")
            return url
        if target in self.pages: dest = self.pages[target]
        elif target == (self.root / "README.md").resolve() and "index.html" in self.pages.values(): dest = "index.html"
        elif target.is_file() and (kind != "href" or target.suffix.lower() in _MEDIA):
            if not target.is_relative_to(self.root):
                self.errors.append(f"{page}: {kind} {url!r} is outside the project ({target})")
                return url
            dest = self.copy_asset(target)
        elif target.is_relative_to(self.root) and self.git_url:  # source files, folders: link to the repository
            kind_ = "tree" if target.is_dir() else "blob"
            return f"{self.git_url}/{kind_}/{self.branch}/{target.relative_to(self.root).as_posix()}" + sep + frag
        else:
            self.errors.append(f"{page}: {kind} {url!r} points outside the project ({target})")
            return url
        return self.rel(dest, page) + sep + frag

    def rewrite_html(self, fragment: str, base: Path, page: str) -> str:
        "Rewrite every src/href in the tags of `fragment`, written relative to `base`"
        def attr(m):
            url = html.unescape(m.group(4))
            kind = "src" if m.group(2).lower() in ("src", "poster") else "href"
            new = self.rewrite_url(url, base, page, kind)
            mark = " data-doclink" if kind == "href" and self.doc_url and url.startswith(self.doc_url) else ""
            return f"{m.group(1)}{m.group(3)}{html.escape(new, quote=True)}{m.group(3)}{mark}"
        return _re_tag.sub(lambda t: _re_url_attr.sub(attr, t.group(0)), fragment)

    def write_bytes(self, rel: str, data: bytes) -> str:
        p = self.out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return rel

    # -- rendering -----------------------------------------------------------------------------------
    def markdown(self, src: str, base: Path, page: str, depth: int = 0) -> str:
        "Markdown written in folder `base` as HTML for `page`; `{{< include FILE >}}` expanded"
        parts, pos, res = [], 0, []
        for m in _re_include.finditer(src):
            parts.append(("md", src[pos:m.start()]))
            parts.append(("include", m.group(1)))
            pos = m.end()
        parts.append(("md", src[pos:]))
        for kind, s in parts:
            if kind == "include":
                f = (base / s).resolve()
                if not f.is_file():
                    self.errors.append(f"{page}: include {s!r} points at {f}, which does not exist")
                elif depth > 5: self.errors.append(f"{page}: includes nested too deep at {f}")
                else: res.append(self.markdown(f.read_text(encoding="utf-8"), f.parent, page, depth + 1))
            elif s.strip():
                res.append(self.rewrite_html(self.md.render(quarto_divs(s)), base, page))
        return "".join(res)

    def render_output(self, o, opts, page: str, base: Path, name: str) -> str:
        kind = o.get("output_type")
        if kind == "stream":
            if o.get("name") == "stderr" and _false(opts.get("warning", True)): return ""
            text = _re_ansi.sub("", _join(o.get("text")))
            # keep only the last state of carriage-return progress lines (tqdm)
            text = "\n".join(l.rsplit("\r", 1)[-1] for l in text.split("\n"))
            if not text.strip(): return ""
            return f'<pre class="output-stream {html.escape(o.get("name", ""))}">{html.escape(text)}</pre>'
        if kind not in ("display_data", "execute_result"): return ""
        data, meta = o.get("data", {}) or {}, o.get("metadata", {}) or {}
        if "application/vnd.jupyter.widget-view+json" in data:
            plain = _join(data.get("text/plain"))
            imgs = [m for m in _IMG_MIME if m in data]
            if not imgs:
                if plain.strip() and not _re_widget_repr.match(plain.strip()):
                    return f'<pre class="output-text">{html.escape(plain)}</pre>'  # e.g. a finished progress bar
                return ('<p class="widget-note">An interactive widget is here in Jupyter; '
                        'run the notebook to use it.</p>')
        if "text/markdown" in data and opts.get("output") == "asis":
            return f'<div class="output-markdown">{self.markdown(_join(data["text/markdown"]), base, page)}</div>'
        cap = opts.get("fig-cap")
        alt = html.escape(str(opts.get("fig-alt") or cap or f"Output of a cell on {page}"), quote=True)
        for mime in ("text/html", "image/svg+xml", *_IMG_MIME, "text/markdown", "text/latex", "text/plain"):
            if mime not in data: continue
            v = _join(data[mime])
            if mime == "text/html":
                return f'<div class="output-html">{self.rewrite_html(v, base, page)}</div>'
            if mime.startswith("image/"):
                ext = "svg" if mime == "image/svg+xml" else _IMG_MIME[mime]
                raw = v.encode() if ext == "svg" else base64.b64decode(v)
                src = self.write_bytes(f"{name}.{ext}", raw)
                m = meta.get(mime, {}) if isinstance(meta.get(mime), dict) else {}
                size = "".join(f' {k}="{int(m[k])}"' for k in ("width", "height") if k in m)
                img = f'<img src="{html.escape(self.rel(src, page))}" alt="{alt}"{size} loading="eager">'
                if cap: return f'<figure>{img}<figcaption>{html.escape(str(cap))}</figcaption></figure>'
                return f'<div class="output-image">{img}</div>'
            if mime == "text/markdown":
                return f'<div class="output-markdown">{self.markdown(v, base, page)}</div>'
            if mime == "text/latex":
                tex = v.strip().strip("$")
                return f'<div class="output-math">{_math(tex, True)}</div>'
            if not v.strip(): return ""
            return f'<pre class="output-text">{html.escape(v)}</pre>'
        if data:  # an output the site cannot show is named, not dropped
            self.errors.append(f"{page}: output {name.rsplit('/', 1)[-1]} has no form the site can show ({', '.join(sorted(data))})")
        return ""

    def render_cell(self, cell, i: int, page: str, base: Path) -> str:
        src = _join(cell.get("source"))
        if cell.cell_type == "markdown":
            atts = cell.get("attachments") or {}
            for fname, bundle in atts.items():  # ![](attachment:name.png)
                mime = next((m for m in bundle if m in _IMG_MIME or m == "image/svg+xml"), None)
                if not mime: continue
                raw = _join(bundle[mime])
                raw = raw.encode() if mime == "image/svg+xml" else base64.b64decode(raw)
                rel = self.write_bytes(f"{posixpath.splitext(page)[0]}_files/cell-{i}-{Path(fname).name}", raw)
                src = src.replace(f"attachment:{fname}", self.rel(rel, page))
            return f'<div class="cell markdown">{self.markdown(src, base, page)}</div>\n' if src.strip() else ""
        if cell.cell_type == "raw":
            fmt = (cell.get("metadata") or {}).get("format") or (cell.get("metadata") or {}).get("raw_mimetype", "")
            if fmt in ("text/html", "html"): return f'<div class="cell raw">{self.rewrite_html(src, base, page)}</div>\n'
            return ""
        opts, code = _cell_options(src)
        if _false(opts.get("include", True)): return ""
        parts = []
        if code.strip() and not _false(opts.get("echo", True)):
            block = _highlight(code, (cell.get("metadata") or {}).get("language", "python"))
            if opts.get("code-fold") in ("show", True, "true"):
                summary = html.escape(str(opts.get("code-summary") or "Code"))
                openattr = " open" if opts.get("code-fold") == "show" else ""
                block = f"<details class=\"code-fold\"{openattr}><summary>{summary}</summary>{block}</details>"
            parts.append(f'<div class="cell-source">{block}</div>')
        if not _false(opts.get("output", True)):
            stem = posixpath.splitext(page)[0]
            outs = [self.render_output(o, opts, page, base, f"{stem}_files/cell-{i}-output-{j}")
                    for j, o in enumerate(cell.get("outputs") or [])]
            outs = [o for o in outs if o]
            if outs: parts.append('<div class="cell-output">' + "\n".join(outs) + "</div>")
        kind = "code api" if opts.get("output") == "asis" and _false(opts.get("echo", True)) else "code"  # show_doc
        return f'<div class="cell {kind}">{"".join(parts)}</div>\n' if parts else ""

    def render_page(self, nb, page: str, base: Path) -> tuple[str, list, dict]:
        fm = getattr(nb, "frontmatter_", {}) or {}
        body = "".join(self.render_cell(c, i, page, base) for i, c in enumerate(nb.cells)
                       if not (c.cell_type == "raw" and i == 0 and fm))
        if fm.get("title"):
            inline = lambda text: self.md.renderInline(str(text))  # `code` and *emphasis* in titles and subtitles
            desc = f'<p class="description">{inline(fm["description"])}</p>' if fm.get("description") else ""
            body = f'<header class="page-title"><h1 id="page-title">{inline(fm["title"])}</h1>{desc}</header>\n{body}'
        body, toc = add_heading_ids(body)
        return body, toc, fm

    def layout(self, page: str, title: str, body: str, toc: list, nav: list, source: Path) -> str:
        "The page around `body`: the header with the search box, the sidebar by section, previous / next in reading order"
        def link(target): return html.escape(self.rel(target, page))
        sections = []
        for section, pages in nav:
            items = []
            for p, t in pages:
                cur = ' aria-current="page"' if p == page else ""
                sub = ""
                if p == page and toc:
                    sub = "<ul class=\"toc\">" + "".join(
                        f'<li class="toc-h{lvl}"><a href="#{html.escape(ident)}">{html.escape(txt)}</a></li>'
                        for lvl, ident, txt in toc) + "</ul>"
                items.append(f'<li><a href="{link(p)}"{cur}>{html.escape(_plain(t))}</a>{sub}</li>')
            head = f'<p class="nav-section">{html.escape(section)}</p>' if section else ""
            sections.append(f'{head}<ul>\n' + "\n".join(items) + "\n</ul>")
        order = [(p, t) for _, pages in nav for p, t in pages]
        at = next(i for i, (p, _) in enumerate(order) if p == page)
        prev_next = ""
        if at > 0:
            prev_next += f'<a class="prev" rel="prev" href="{link(order[at - 1][0])}">← {html.escape(_plain(order[at - 1][1]))}</a>'
        if at + 1 < len(order):
            prev_next += f'<a class="next" rel="next" href="{link(order[at + 1][0])}">{html.escape(_plain(order[at + 1][1]))} →</a>'
        src_rel = source.relative_to(self.root).as_posix()
        src_link = f'{self.git_url}/blob/{self.branch}/{src_rel}' if self.git_url else ""
        footer = (f'This page is <a href="{html.escape(src_link)}"><code>{html.escape(src_rel)}</code></a>, '
                  f'rendered by <code>docs/build.py</code>.' if src_link else "")
        page_title = self.title if title == self.title else f"{_plain(title)} – {self.title}"
        repo = f'<a class="repo" href="{html.escape(self.git_url)}">Source on GitHub</a>' if self.git_url else ""
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(page_title)}</title>
<meta name="description" content="{html.escape(self.description, quote=True)}">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{link('_static/style.css')}">
<link rel="stylesheet" href="{link('_static/pygments.css')}">
<link rel="stylesheet" href="{link('pagefind/pagefind-ui.css')}">
<script src="{link('pagefind/pagefind-ui.js')}"></script>
</head>
<body>
<header class="site-header"><a class="site-title" href="{link(nav[0][1][0][0])}">{html.escape(self.title)}</a>
<div id="search" class="search" role="search"></div><a class="to-contents" href="#contents">Contents</a>{repo}</header>
<div class="layout">
<main data-pagefind-body>
{body}
<nav class="prev-next" aria-label="Previous and next pages" data-pagefind-ignore>{prev_next}</nav>
<footer class="page-footer" data-pagefind-ignore>{footer}</footer>
</main>
<nav class="sidebar" id="contents" aria-label="Contents">
{chr(10).join(sections)}
</nav>
</div>
<script>new PagefindUI({{element: "#search", showSubResults: true, showImages: false, resetStyles: false}});</script>
</body>
</html>
"""

    def lesson_download(self, nb_path: Path, page: str) -> str:
        "Write the learner's copy of a lesson beside its page, and the link to it that goes at the top of the page"
        from bts_course.lessons import learner_copy
        copy = json.dumps(learner_copy(nb_path), indent=1, ensure_ascii=False) + "\n"
        rel = self.write_bytes(posixpath.join(posixpath.dirname(page), nb_path.name), copy.encode())
        return (f'<p class="download" data-pagefind-ignore><a href="{html.escape(self.rel(rel, page))}" download>Download this '
                "lesson as a notebook</a>, with its exercises to fill in: it runs anywhere the package is installed "
                '(<code>pip install "bts_course[learn]"</code>).</p>\n')

    # -- the whole build -----------------------------------------------------------------------------
    def build(self, verbose: bool = True) -> list[str]:
        nbs = self.notebooks()
        if not nbs: raise BuildError(f"no notebooks in {self.nbs}")
        self.pages = {nb.resolve(): self.page_of(nb) for nb in nbs}
        dup = {p for p in self.pages.values() if list(self.pages.values()).count(p) > 1}
        if dup: raise BuildError(f"several notebooks would make the same page: {sorted(dup)}")
        docs_filter, rendered = _processors(), []
        for nb_path in nbs:
            t0 = time.perf_counter()
            page = self.pages[nb_path.resolve()]
            nb = process_notebook(nb_path, docs_filter)
            body, toc, fm = self.render_page(nb, page, nb_path.parent)
            if nb_path.parent == self.nbs / COURSE and nb_path.name[0].isdigit(): body = self.lesson_download(nb_path, page) + body
            title = str(fm.get("title") or (self.title if nb_path.stem == "index" else nb_path.stem))
            rendered.append((nb_path, page, title, body, toc))
            if verbose: print(f"  {nb_path.relative_to(self.root)} -> {page} ({time.perf_counter() - t0:.1f} s)")
        titles = {nb_path: (page, title if nb_path.stem != "index" or nb_path.parent != self.nbs else "Home")
                  for nb_path, page, title, _, _ in rendered}
        nav = [(section, [titles[nb] for nb in group]) for section, group in self.sections()]
        ids = {page: set(re.findall(r'\sid="([^"]+)"', body)) for _, page, _, body, _ in rendered}
        for nb_path, page, title, body, toc in rendered:
            body = unwrap_dead_doclinks(body, page, ids)
            (self.out / page).parent.mkdir(parents=True, exist_ok=True)
            (self.out / page).write_text(self.layout(page, title, body, toc, nav, nb_path), encoding="utf-8")
        static = self.out / "_static"
        static.mkdir(exist_ok=True)
        shutil.copy2(DOCS / "style.css", static / "style.css")
        from pygments.formatters import HtmlFormatter
        (static / "pygments.css").write_text(HtmlFormatter(style="friendly").get_style_defs(".highlight"), encoding="utf-8")
        (self.out / ".nojekyll").write_text("", encoding="utf-8")  # GitHub Pages: serve the _static and *_files folders
        (self.out / MARKER).write_text("built by docs/build.py; safe to delete\n", encoding="utf-8")
        index_for_search(self.out)
        self.errors += check_links(self.out)
        if self.errors: raise BuildError("broken links or files:\n  " + "\n  ".join(dict.fromkeys(self.errors)))
        return [p for _, p, *_ in rendered]


_re_doclink = re.compile(r"<a\s[^>]*?\bhref=\"([^\"]*)\"[^>]*?\sdata-doclink[^>]*>(.*?)</a>", re.S)


def unwrap_dead_doclinks(body: str, page: str, ids: dict) -> str:
    """nbdev links every backticked name it knows, private ones too, to `page.html#name`; a name with no
    documentation block has no such anchor: keep the code, drop the link"""
    def fix(m):
        path, _, frag = html.unescape(m.group(1)).partition("#")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page), path)) if path else page
        if target in ids and frag and frag not in ids[target]: return m.group(2)
        return m.group(0).replace(" data-doclink", "", 1)
    return _re_doclink.sub(fix, body)


def check_links(site: Path) -> list[str]:
    "Every relative src/href in the pages of `site` names a file there, and every #fragment an id in it"
    errors, ids = [], {}
    pages = sorted(site.rglob("*.html"))

    def ids_of(p: Path):
        if p not in ids: ids[p] = set(re.findall(r'\sid="([^"]+)"', p.read_text(encoding="utf-8")))
        return ids[p]

    for p in pages:
        text = p.read_text(encoding="utf-8")
        for tag in _re_tag.findall(text):
            for m in _re_url_attr.finditer(tag):
                url = html.unescape(m.group(4))
                if not url or _re_scheme.match(url) and not url.startswith("#"): continue
                path, _, frag = url.partition("#")
                target = (p.parent / unquote(path)).resolve() if path else p
                rel = p.relative_to(site).as_posix()
                if not target.is_file(): errors.append(f"{rel}: {url!r} names no file in the site")
                elif frag and target.suffix == ".html" and frag not in ids_of(target):
                    errors.append(f"{rel}: {url!r}: no id {frag!r} in {target.relative_to(site).as_posix()}")
    return errors


def build_site(out: Path, nbs: Path = REPO / "nbs", verbose: bool = True) -> list[str]:
    "Build the site from the notebooks in `nbs` into `out` (replaced only when the build succeeds)"
    out, nbs = Path(out).resolve(), Path(nbs).resolve()
    if not nbs.is_dir(): raise BuildError(f"{nbs}: no such folder of notebooks")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise BuildError(f"{out} exists and is not a site built by docs/build.py; not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    cwd = os.getcwd()
    try:
        os.chdir(REPO)  # nbdev's processors read settings.ini from the working directory
        pages = Site(Path(nbs), tmp).build(verbose=verbose)
        # the site must not say where it was built: check_links resolved paths relative to tmp, fine to move
        if out.exists(): shutil.rmtree(out)
        tmp.chmod(0o755)  # mkdtemp makes it private; a site is for everyone to read
        os.replace(tmp, out)
        return pages
    finally:
        os.chdir(cwd)
        if tmp.exists(): shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="docs/build.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "site"), help="folder to write the site into (default: site/)")
    ap.add_argument("--nbs", default=str(REPO / "nbs"), help="folder of notebooks (default: nbs/)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try: pages = build_site(Path(args.out), Path(args.nbs), verbose=not args.quiet)
    except BuildError as e:
        print(f"docs/build.py: error: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"built {len(pages)} pages into {Path(args.out).resolve()} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
