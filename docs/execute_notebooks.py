#!/usr/bin/env python
"""Execute notebooks top to bottom and save their outputs in place, so the docs show current figures.

    .venv/bin/python docs/execute_notebooks.py [NB ...] [--flags 'slow gpu'] [--no-docs] [--timeout S] [--out DIR]

Each notebook runs in a fresh Jupyter kernel of this Python (nbclient + ipykernel), in its own folder,
as "Restart & Run All" would. Cells flagged with one of settings.ini's `tst_flags` (`#| slow`, `#| gpu`,
`#| download`) are not executed and keep whatever outputs they had, unless their flag is passed with
`--flags`, as with `nbdev_test --flags`; nor are `#| eval: false` cells and `nbdev_export()` calls.

Cells flagged `#| docs` are the exception: `nbdev_test` skips them (`docs` is one of the `tst_flags`), and
this script runs them. They make what only the docs need, at a cost the tests should not pay -- the full
`bts demo` run whose tables and GIF the demo page shows. `--no-docs` skips them too, as `nbdev_test` does.

Outputs are what a reader sees, so the kernel writes no machine noise into them: it is started with
`--IPKernelApp.capture_fd_output=False`, so what native libraries write straight to file descriptor 2 --
TensorFlow's C++ start-up lines -- goes to a log (shown only when the notebook fails) instead of into the
cell's output, while Python's own `print`s, warnings and tracebacks are kept. Any other noise left in the
outputs (temporary paths, HTTP log timestamps, TensorFlow / absl log lines; see `machine_noise`) is
reported as a warning naming the cell: the notebook should not print it.

The result is cleaned as `nbdev_clean` cleans (no execution counts nor volatile metadata) and replaces
the notebook only when every cell ran; with `--out DIR` the executed copies go to DIR instead.

Exit status 1 if any notebook fails (its file is left untouched), after trying the others.
"""
from __future__ import annotations

import argparse, json, os, re, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIG_IMAGE = 300_000  # bytes: outputs larger than this bloat the repository (see the house rules)
DOCS_FLAG = "docs"  # `#| docs` cells: skipped by nbdev_test (a tst_flag), run here
# native libraries' own stderr (TensorFlow's C++ logs) stays out of the cells' outputs
KERNEL_ARGUMENTS = ("--IPKernelApp.capture_fd_output=False",)

# Machine noise: lines in a saved output that say where and when the notebook ran, not what it computed.
NOISE = {
    "TensorFlow's start-up banner": re.compile(
        r"oneDNN custom operations|cpu_feature_guard|Could not find cuda|absl::InitializeLog|cudart_stub|"
        r"This TensorFlow binary is optimized"),
    "a TensorFlow / absl log line": re.compile(
        r"^(?:WARNING|INFO|ERROR):(?:absl|tensorflow|keras)\b|^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]", re.M),
    "a temporary path": re.compile(r"/tmp/(?:tmp|pytest)|/var/folders/|\\AppData\\Local\\Temp\\"),
    "an HTTP server log timestamp": re.compile(r"\[\d{1,2}/[A-Z][a-z]{2}/\d{4}[ :]\d\d:\d\d:\d\d"),
    "a terminal colour code": re.compile(r"\x1b\["),
    "the memory available now": re.compile(r"GB available|available now", re.I),
}


def _output_texts(o: dict) -> list[str]:
    "The text an output shows: a stream, a text/* representation, an error's traceback"
    def join(v): return "".join(v) if isinstance(v, list) else str(v)
    res = [join(o["text"])] if "text" in o else []
    res += [join(v) for mime, v in (o.get("data") or {}).items() if mime.startswith("text/")]
    if o.get("output_type") == "error": res.append("\n".join(o.get("traceback") or []))
    return res


def _first_line(source) -> str:
    "The first line of a cell's `source` that is not a `#|` directive, shortened"
    src = "".join(source) if isinstance(source, list) else str(source)
    line = next((l.strip() for l in src.splitlines() if l.strip() and not l.lstrip().startswith("#|")), "")
    return line if len(line) <= 60 else line[:57] + "..."


def machine_noise(nb_dict: dict) -> list[str]:
    "One line per output line of the notebook `nb_dict` that holds machine noise (`NOISE`): the cell, what, the line"
    res = []
    for i, c in enumerate(nb_dict.get("cells", [])):
        for o in c.get("outputs") or []:
            for text in _output_texts(o):
                for what, pattern in NOISE.items():
                    for m in pattern.finditer(text):
                        start, end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.end())
                        line = text[start:] if end < 0 else text[start:end]
                        res.append(f"cell {i} ({_first_line(c.get('source', ''))}): {what}: {line.strip()[:160]}")
    return list(dict.fromkeys(res))


def _directives(source: str) -> dict:
    "nbdev's directives (`#| name args`) at the top of a code cell's `source`"
    from execnb.nbio import AttrDict
    from nbdev.process import extract_directives
    return extract_directives(AttrDict(source=source, cell_type="code"), remove=False)


def should_skip(source: str, skip_flags: set) -> str | None:
    "Why a code cell with `source` is not executed, or None when it is"
    if "nbdev_export" + "(" in source: return "nbdev_export"
    d = _directives(source)
    if (d.get("eval:") or [""])[0].lower() == "false": return "eval: false"
    hit = skip_flags & d.keys()
    return f"#| {sorted(hit)[0]}" if hit else None


def make_client(nb, cwd: Path, skip_flags: set, timeout: int | None):
    from nbclient import NotebookClient

    class FlaggedClient(NotebookClient):
        "Runs every code cell except those `should_skip` names"
        skipped: list = []

        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if cell.cell_type == "code":
                why = should_skip(cell.source, skip_flags)
                if why:
                    self.skipped.append((cell_index, why))
                    return cell
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    client = FlaggedClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False, record_timing=False,
                           store_widget_state=False,  # widget state can weigh megabytes; the docs show none
                           extra_arguments=list(KERNEL_ARGUMENTS),
                           resources={"metadata": {"path": str(cwd)}})
    client.skipped = []
    return client


def clean(nb_dict: dict) -> dict:
    "Clean like `nbdev_clean` with this project's settings"
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    cfg = get_config(path=REPO)
    clean_nb(nb_dict, cfg.clear_all, cfg.get("allowed_metadata_keys", "").split(),
             cfg.get("allowed_cell_metadata_keys", "").split(), cfg.clean_ids)
    return nb_dict


def big_outputs(nb_dict: dict) -> list[str]:
    import base64
    res = []
    for i, c in enumerate(nb_dict["cells"]):
        for o in c.get("outputs", []):
            for mime, v in (o.get("data") or {}).items():
                if mime.startswith("image/") and mime != "image/svg+xml":
                    n = len(base64.b64decode("".join(v) if isinstance(v, list) else v))
                    if n > BIG_IMAGE: res.append(f"cell {i}: {mime} of {n / 1e3:.0f} KB")
    return res


def execute(path: Path, dest: Path, skip_flags: set, timeout: int | None) -> None:
    "Run the notebook at `path` and write it, cleaned, to `dest` (atomically); raise on any error"
    import nbformat
    from execnb.nbio import nb2str
    nb = nbformat.read(path, as_version=4)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not any(c.cell_type == "code" and c.source.strip() for c in nb.cells):
        print("    no code to run")
        if dest != path: dest.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        return
    client = make_client(nb, dest.parent, skip_flags, timeout)
    with tempfile.TemporaryFile() as log:  # the kernel process's own stdout and stderr (native libraries' logs)
        try: client.execute(stdout=log, stderr=log)
        except Exception as e:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
            if not tail: raise
            raise RuntimeError(f"{str(e).strip() or type(e).__name__}\n--- the kernel's own log (last lines) ---\n"
                               + "\n".join(tail)) from e
    for idx, why in client.skipped: print(f"    cell {idx} not executed ({why})")
    d = clean(json.loads(nbformat.writes(nb)))
    for line in big_outputs(d): print(f"    warning: {line} (keep committed images under {BIG_IMAGE // 1000} KB)")
    for line in machine_noise(d): print(f"    warning: {line} (machine noise: keep it out of the outputs)")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}-", suffix=".ipynb.tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f: f.write(nb2str(d))
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; keep the notebook's own mode
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp): os.unlink(tmp)
        raise


def default_notebooks() -> list[Path]:
    nbs = REPO / "nbs"
    return sorted(p for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="docs/execute_notebooks.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebook in nbs/)")
    ap.add_argument("--flags", default="", help="space-separated test flags to run anyway, as nbdev_test's: --flags 'slow gpu'")
    ap.add_argument("--no-docs", action="store_true",
                    help=f"do not run `#| {DOCS_FLAG}` cells either, as nbdev_test (by default they run: they make the docs)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    ap.add_argument("--out", help="write the executed notebooks into this folder instead of in place")
    args = ap.parse_args(argv)
    from nbdev.config import get_config
    tst_flags = set(get_config(path=REPO).get("tst_flags", "").replace("|", " ").split())
    flags = set(args.flags.split())
    unknown = flags - tst_flags
    if unknown:
        print(f"docs/execute_notebooks.py: error: unknown flags {sorted(unknown)}; settings.ini has {sorted(tst_flags)}",
              file=sys.stderr)
        return 2
    skip = tst_flags - flags - {DOCS_FLAG}  # `#| docs` cells are what this script is for
    if args.no_docs: skip.add(DOCS_FLAG)
    paths = [Path(p) for p in args.notebooks] or default_notebooks()
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        print(f"docs/execute_notebooks.py: error: not notebooks: {', '.join(missing)}", file=sys.stderr)
        return 2
    failed = []
    for p in paths:
        dest = Path(args.out) / p.name if args.out else p
        t0 = time.perf_counter()
        print(f"{p} ...", flush=True)
        try: execute(p.resolve(), dest.resolve(), skip, args.timeout)
        except Exception as e:
            failed.append(p)
            msg = str(e).strip() or type(e).__name__
            print(f"docs/execute_notebooks.py: error: {p} failed, left unchanged:\n{msg}", file=sys.stderr)
            continue
        print(f"  saved {dest} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if failed:
        print(f"docs/execute_notebooks.py: {len(failed)} of {len(paths)} notebooks failed: "
              f"{', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
