"The shipped model's recipe (recipes/brats2018/train.sh) end to end with a stand-in for `bts`: what each step is asked to do"
import json, os, subprocess
from pathlib import Path

import pytest

from bts_course.pretrained import check_weights, read_card

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "brats2018"
PREVIOUS = "9ccc009"  # the commit of the model the CPU profile fine-tunes


def has_commit(commit: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", commit], cwd=REPO, capture_output=True).returncode == 0


def run_recipe(tmp_path: Path, profile: str) -> tuple:
    "Run the recipe with a `bts` that only logs its arguments; the cases are empty folders named as the split names them"
    log, fake = tmp_path / "calls.jsonl", tmp_path / "bts"
    fake.write_text(f"#!/usr/bin/env python3\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n", encoding="utf-8")
    fake.chmod(0o755)
    split = json.loads((RECIPE / "split.json").read_text(encoding="utf-8"))
    data = tmp_path / "brats2018"
    for case in split["train"] + split["valid"]: (data / case).mkdir(parents=True)
    env = {**os.environ, "BTS": str(fake), "BTS_BRATS2018": str(data), "BTS_WORK": str(tmp_path / "work"), "BTS_PROFILE": profile}
    result = subprocess.run(["bash", str(RECIPE / "train.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
    return result, calls, split


@pytest.mark.skipif(not has_commit(PREVIOUS), reason=f"a shallow clone: commit {PREVIOUS} (the previous model) is not here")
def test_the_cpu_recipe_fine_tunes_the_previous_model(tmp_path):
    result, calls, split = run_recipe(tmp_path, "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [c[0] for c in calls] == ["preprocess", "train", "predict", "export", "calibrate"]
    train = calls[1]
    init = Path(train[train.index("--init-from") + 1])
    assert init == tmp_path / "work" / "init" / "bts_course" / "weights"
    assert check_weights(init).is_file() and read_card(init)["training"]["args"]["depth"] == 4  # the old model, intact
    assert train[train.index("--patch-size") + 1:train.index("--patch-size") + 4] == ["96", "96", "64"]
    assert train[train.index("--outputs") + 1] == "regions" and train[train.index("--loss") + 1] == "dice_bce"
    assert "--mixed-precision" in train  # bfloat16 where the CPU has it, float32 elsewhere
    valid = sorted(p.name for p in (tmp_path / "work" / "valid_cases").iterdir())
    assert valid == sorted(split["valid"])  # only the validation patients are predicted for the comparison
    run = tmp_path / "work" / "run-cpu-finetune"
    assert Path(train[train.index("--out") + 1]) == run and Path(calls[2][calls[2].index("--model") + 1]) == run / "best.keras"
    assert Path(calls[3][1]) == run and "--if-better" in calls[3]  # shipped only if better on the same patients


def test_the_recipe_refuses_a_missing_data_folder(tmp_path):
    env = {**os.environ, "BTS_BRATS2018": str(tmp_path / "nowhere"), "BTS_WORK": str(tmp_path / "work"), "BTS_PROFILE": "cpu"}
    result = subprocess.run(["bash", str(RECIPE / "train.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no BraTS 2018 cases at" in result.stderr
    assert not (tmp_path / "work").exists()  # nothing started
