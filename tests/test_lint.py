"""No unreachable code: a statement after `return`, `raise`, `continue` or `break` in the same block never runs.

ruff has no stable rule for it, so this walks the syntax tree of every Python file of the library, the tests,
the benchmarks and the docs builder (and every code cell of the notebooks, which are the library's source)."""
import ast, json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENDS = (ast.Return, ast.Raise, ast.Continue, ast.Break)
FILES = sorted(p for folder in ("bts_course", "tests", "benchmarks", "docs", "recipes") for p in (REPO / folder).rglob("*.py"))


def unreachable(tree: ast.AST) -> list:
    "Line numbers of statements that follow a return / raise / continue / break in the same block"
    found = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list): continue
            for before, after in zip(block[:-1], block[1:], strict=True):
                if isinstance(before, ENDS): found.append(after.lineno)
    return found


def test_the_walker_finds_unreachable_code():
    code = "def f(x):\n    return x\n    x += 1\nfor i in range(3):\n    continue\n    print(i)\n"
    assert unreachable(ast.parse(code)) == [3, 6]
    assert unreachable(ast.parse("def f(x):\n    if x: return 1\n    return 2\n")) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unreachable_code(path):
    assert not unreachable(ast.parse(path.read_text(encoding='utf-8'))), f"{path}: unreachable statements at lines {unreachable(ast.parse(path.read_text(encoding='utf-8')))}"


@pytest.mark.parametrize("path", sorted((REPO / "nbs").glob("*.ipynb")), ids=lambda p: p.name)
def test_no_unreachable_code_in_notebooks(path):
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code": continue
        source = "".join(cell["source"])
        lines = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try: tree = ast.parse(lines)
        except SyntaxError: continue  # cell magics and the like: not Python
        assert not unreachable(tree), f"{path.name}, cell {i}: unreachable statements at lines {unreachable(tree)}"
