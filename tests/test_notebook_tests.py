"""Every exported public name has a test under it in its own notebook (fastcore's habit): a later cell of the notebook
that is not exported and uses the name. Every name has one now: a new export
without a test fails."""
import ast, importlib, json, re
from pathlib import Path

NBS = Path(__file__).resolve().parents[1] / "nbs"

def exported_names(source: str) -> list:
    "The public names an exported cell defines: functions, classes, constants, and methods added with @patch"
    code = "\n".join(line for line in source.splitlines() if not line.startswith(("#|", "%", "!")))
    names = []
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)): names.append(node.name)
        elif isinstance(node, ast.Assign): names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name): names.append(node.target.id)
    return [n for n in names if not n.startswith("_")]


def untested(notebook: Path, public=None) -> set:
    "Exported names of `notebook` (those in `public`; default: its module's `__all__`) that no later, unexported code cell uses"
    cells = ["".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    exported = [bool(re.match(r"#\|\s*export", s)) for s in cells]
    if public is None:
        module = next((m.group(1) for s in cells for m in [re.match(r"#\|\s*default_exp\s+(\S+)", s)] if m), None)
        public = set(importlib.import_module(f"bts_course.{module}").__all__) if module else set()
    missing = set()
    for i, source in enumerate(cells):
        if not exported[i]: continue
        tests = [s for s, e in zip(cells[i + 1:], exported[i + 1:], strict=True) if not e and "#| eval: false" not in s]
        missing |= {n for n in exported_names(source)
                    if n in public and not any(re.search(rf"\b{re.escape(n)}\b", t) for t in tests)}
    return missing


def test_the_checker_finds_an_untested_export(tmp_path):
    cell = lambda text: {"cell_type": "code", "source": text.splitlines(keepends=True), "metadata": {}, "outputs": []}
    nb = {"cells": [cell("#| export\ndef tested(x): return x\nLIMIT = 3\n@patch\ndef grow(self: int): return self"),
                    cell("#| export\ndef _private(): pass\ndef forgotten(): pass"),
                    cell("assert tested(1) == 1 and LIMIT == 3 and grow")]}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    assert untested(tmp_path / "x.ipynb", public={"tested", "LIMIT", "grow", "forgotten"}) == {"forgotten"}


def test_every_export_has_a_test_in_its_notebook():
    missing = {nb.name: sorted(names) for nb in sorted(NBS.glob("*.ipynb")) if (names := untested(nb))}
    assert not missing, f"exported without a test under it in its notebook: {missing}"
