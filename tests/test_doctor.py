"""`bts doctor`: each check reports what it found, a missing TensorFlow or Chromium is a failed or warned line (never a
traceback), a data folder's contents are named, and the exit code says whether everything needed works."""
import subprocess, sys


from bts_course.data import save_nifti
from bts_course.doctor import Finding, check_chromium, check_data, check_optimizer, diagnose, findings_table, healthy
from bts_course.phantom import make_phantom


def run_doctor(*args, block=()) -> subprocess.CompletedProcess:
    "`bts doctor` in a fresh interpreter, with the modules in `block` made unimportable"
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
            + f"from bts_course.cli import main\nsys.exit(main(['doctor', *{list(args)!r}]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def write_msd(root, seeds, shape=(48, 48, 32)):
    for seed in seeds:
        case = make_phantom(seed, shape)
        save_nifti(case.image, root / "imagesTr" / f"BRATS_{seed:03d}.nii.gz")
        save_nifti(case.label, root / "labelsTr" / f"BRATS_{seed:03d}.nii.gz")


def test_without_tensorflow_it_reports_and_exits_non_zero():
    out = run_doctor(block=("tensorflow", "keras"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(l.startswith("FAIL  TensorFlow and Keras") and "cannot import" in l for l in lines), out.stdout
    assert any("not tried: TensorFlow is missing" in l for l in lines)
    assert "fix: pip install 'tensorflow>=2.16' 'keras>=3'" in out.stdout
    assert lines[0].startswith("OK    Python")


def test_without_chromium_it_warns_but_that_is_not_fatal():
    finding = check_chromium("/nowhere/chromium")
    assert (finding.status, finding.needed) == ("warn", False) and "apt-get install chromium" in finding.fix
    assert healthy([Finding("Python", "ok", ""), finding])


def test_adam_takes_its_learning_rate():
    finding = check_optimizer()
    assert finding.status == "ok", finding
    assert "learning rate 1e-05: first step 1e-05" in finding.detail


def test_data_folders_are_described(tmp_path):
    empty = tmp_path / "empty"; empty.mkdir()
    assert (check_data(empty).status, check_data(empty).detail) == ("fail", "the folder is empty")
    assert check_data(tmp_path / "missing").detail == "no such folder"
    (empty / "notes.txt").write_text("x", encoding="utf-8")
    assert "no cases among 1 entries (notes.txt)" in check_data(empty).detail
    mixed = tmp_path / "mixed"
    write_msd(mixed / "msd", [0])
    brats = mixed / "BraTS-GLI-00001-000"; brats.mkdir(parents=True)
    case = make_phantom(1, (48, 48, 32))
    for c, suffix in enumerate(("t2f", "t1n", "t1c", "t2w")):
        save_nifti(case.image[..., c], brats / f"{brats.name}-{suffix}.nii.gz")
    finding = check_data(mixed)
    assert finding.status == "warn" and finding.detail.startswith("2 case(s): 1 brats2023, 1 msd; 1 with labels"), finding


def test_the_table_and_the_exit_code(tmp_path):
    write_msd(tmp_path / "cases", [0, 1])
    findings = diagnose(tmp_path / "cases", chromium="/nowhere/chromium")
    table = findings_table(findings)
    assert len([l for l in table.splitlines() if not l.startswith(" ")]) == len(findings)
    assert findings[-1].detail == "2 case(s): 2 msd; 2 with labels"
    assert healthy(findings) == all(f.status != "fail" or not f.needed for f in findings)


def test_a_broken_check_is_a_line_not_a_traceback(monkeypatch):
    import bts_course.doctor as doctor
    monkeypatch.setattr(doctor, "check_optimizer", lambda: 1 / 0)
    findings = doctor.diagnose(chromium="/nowhere")
    broken = next(f for f in findings if f.check == "Adam honours its learning rate")
    assert broken.status == "fail" and "ZeroDivisionError" in broken.detail
