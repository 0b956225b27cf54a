#!/usr/bin/env python
"""Execute notebooks top to bottom and save their outputs in place, so the docs show current figures.

    .venv/bin/python docs/execute_notebooks.py [NB ...] [--flags 'slow gpu'] [--timeout S] [--out DIR]

Each notebook runs in a fresh Jupyter kernel of this Python (nbclient + ipykernel), in its own folder,
as "Restart & Run All" would. Cells flagged with one of settings.ini's `tst_flags` (`#| slow`, `#| gpu`,
`#| download`) are not executed and keep whatever outputs they had, unless their flag is passed with
`--flags`, as with `nbdev_test --flags`; nor are `#| eval: false` cells and `nbdev_export()` calls.
The result is cleaned as `nbdev_clean` cleans (no execution counts nor volatile metadata) and replaces
the notebook only when every cell ran; with `--out DIR` the executed copies go to DIR instead.

Exit status 1 if any notebook fails (its file is left untouched), after trying the others.
"""
from __future__ import annotations

import argparse, json, os, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIG_IMAGE = 300_000  # bytes: outputs larger than this bloat the repository (see the house rules)


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
    client.execute()
    for idx, why in client.skipped: print(f"    cell {idx} not executed ({why})")
    d = clean(json.loads(nbformat.writes(nb)))
    for line in big_outputs(d): print(f"    warning: {line} (keep committed images under {BIG_IMAGE // 1000} KB)")
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
    skip = tst_flags - flags
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
