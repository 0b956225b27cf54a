"""The plan of the package, as README's "The plan" draws it: every module on a floor, and every import of one
module by another -- at the top of the file or inside a function -- runs down to a lower floor. No circle can
form, and a new module fails here until it is given its floor."""
import ast, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bts_course"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "_modidx"))


def read_plan(text: str) -> dict:
    "The plan block of a README (lines `floor N  module module ...`) -> {module: floor}"
    block = re.search(r"<!-- plan -->\s*```text\n(.*?)```", text, re.S)
    if block is None: raise ValueError("no plan block (<!-- plan --> then a ```text block) in the README")
    floors = {}
    for line in block.group(1).splitlines():
        found = re.fullmatch(r"floor\s+(\d+)\s+(.+?)", line.strip())
        if found is None: continue
        for module in found.group(2).split():
            if module in floors: raise ValueError(f"{module} is on the plan twice")
            floors[module] = int(found.group(1))
    return floors


def package_imports(source: str) -> set:
    "The package's modules that a module's source imports, by name, wherever the import statement stands"
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 0 and parts[0] != "bts_course": continue
            inside = parts[1:] if node.level == 0 else [p for p in parts if p]
            if inside: imported.add(inside[0])
            else: imported.update(alias.name for alias in node.names)  # from . import evaluation, training
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[1] for a in node.names if a.name.startswith("bts_course."))
    return imported & set(MODULES)


PLAN = read_plan((ROOT / "README.md").read_text(encoding="utf-8"))
IMPORTS = {m: package_imports((PACKAGE / f"{m}.py").read_text(encoding="utf-8")) - {m} for m in MODULES}


def test_reading_the_plan_and_the_imports():
    plan = read_plan("<!-- plan -->\n```text\nfloor 2   model   training\nfloor 1   data\n```\n")
    assert plan == {"model": 2, "training": 2, "data": 1}
    with pytest.raises(ValueError, match="twice"): read_plan("<!-- plan -->\n```text\nfloor 2 data\nfloor 1 data\n```")
    source = ("from .data import check_size\nimport numpy as np\nfrom . import evaluation, viz\n"
              "def f():\n    from bts_course.model import unet_model_3d\n    import bts_course.metrics\n"
              "    from bts_course import __version__\n")
    assert package_imports(source) == {"data", "evaluation", "viz", "model", "metrics"}


def test_every_module_is_on_the_plan():
    assert set(PLAN) == set(MODULES), f"not on the plan: {set(MODULES) - set(PLAN)}; on the plan, gone: {set(PLAN) - set(MODULES)}"


def test_the_command_line_is_alone_on_the_top_floor():
    assert [m for m, floor in PLAN.items() if floor == max(PLAN.values())] == ["cli"]


@pytest.mark.parametrize("module", MODULES)
def test_imports_run_down_the_plan(module):
    "A deprecated name's lazy fetch from its new home (importlib, for one release) is the one allowed way up"
    upward = sorted(m for m in IMPORTS[module] if PLAN.get(m, 0) >= PLAN.get(module, 0))
    assert not upward, f"{module} (floor {PLAN.get(module)}) imports {', '.join(f'{m} (floor {PLAN.get(m)})' for m in upward)}"


def test_no_floor_is_higher_than_it_needs_to_be():
    "Each module stands one floor above the highest module it imports: the plan draws the house as it is"
    for module in MODULES:
        needed = 1 + max((PLAN[m] for m in IMPORTS[module]), default=0)
        assert PLAN[module] == needed or module == "cli", f"{module} is on floor {PLAN[module]}, its imports put it on {needed}"
