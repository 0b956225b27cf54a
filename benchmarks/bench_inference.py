"""Whole-scan inference: does `predict_volume`'s time follow the brain's volume?

Part 1, speed and memory, with the course's network (depth 4, 32 base filters; untrained weights
are fine for timing) on phantoms whose brain boxes span BraTS, from small (about 120x150x110)
through the usual phantom (about 141x176x128 in a 240x240x155 scan) to large (about 160x200x160,
the upper end; such a box does not fit in 240x240x155 along z, so that phantom's scan is larger):
- one forward pass of the network over the brain box padded to multiples of its divisor: the
  least work any method that predicts every brain voxel can do (its time is the reference);
- `predict_volume` at the default budget (taken from the machine) and at 4 GB;
- the course's method on the usual phantom: non-overlapping 160x160x16 tiles over the whole scan,
  one at a time, stitched (`predict_course_tiles`).
Every run is a fresh process, so its peak memory (ru_maxrss) is its own; "memory" is how much the
process grew during the call, which is what a budget bounds. Each method runs twice on each box,
interleaved with the others, and the faster run counts (the machine is shared). Targets: at most 1.1x the one-pass time
at the default budget, at most 1.25x at 4 GB, at least 4x faster than the course's tiles, and the
memory within the budget.

Part 2, quality: a small U-Net trained on 40x48x16 patches of 64x64x48 phantoms (a patch covers
about as much of a slice as the head's box, like the course's 160x160 patches of a real brain's box);
mean Dice over unseen phantoms of `predict_volume` (one window, and split into windows by a small
budget) and of the course's tiling (tiles of the training patch size).

Run: `.venv/bin/python benchmarks/run.py inference` (about 20 minutes on two CPU cores), or
`.venv/bin/python benchmarks/bench_inference.py --quick` (a network with 8 base filters, a 1 GB
budget in place of 4 GB, two boxes, a shorter quality part: a few minutes, to check the benchmark).
"""
import json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

# scan grid -> the phantom's brain box (make_phantom(0, grid)): small, usual, large
SCANS = {"small": (204, 204, 134), "usual": (240, 240, 155), "large": (271, 272, 193)}
FULL_GB, QUICK_GB = 4.0, 1.0  # the fixed budget; the quick network has about a quarter of the activations
REPEATS = 2  # runs of each method on each box, the fastest kept
BEFORE = (0.9219, 0.9490, 0.9246)  # part 2's Dice of predict_volume before window planning by the brain (commit 5e77f09)


def make_scan(name: str) -> np.ndarray:
    "The phantom scan `(X, Y, Z, 4)` of `SCANS[name]`; the large one cut to its brain box and 20 voxels around, like a BraTS scan's margin"
    from bts_course.phantom import make_phantom
    from bts_course.preprocess import brain_box
    image = make_phantom(0, SCANS[name]).image
    if name != "large": return image
    cut = tuple(slice(max(0, s.start - 20), s.stop + 20) for s in brain_box(image))
    return np.ascontiguousarray(image[cut])


def course_network(quick: bool):
    "The course's U-Net (untrained); with `quick`, 8 base filters instead of 32"
    import keras
    from bts_course.model import unet_model_3d
    from bts_course.metrics import soft_dice_loss
    keras.utils.set_random_seed(0)
    return unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), n_base_filters=8 if quick else 32)


def rss_gb() -> float:
    "This process's resident memory now, GB"
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def child(method: str, scan_file: str, budget: str, quick: bool) -> dict:
    "Run one method on one scan in this (fresh) process; report time, plan and memory"
    from bts_course import evaluation as ev
    from bts_course import inference as inf
    from bts_course.model import model_divisor, with_input_shape
    from bts_course.preprocess import brain_box
    model = course_network(quick)
    image = np.load(scan_file)
    box = brain_box(image)
    crop = tuple(s.stop - s.start for s in box)
    report = {"box": crop}
    d = model_divisor(model)
    with_input_shape(model).predict_on_batch(np.zeros((1, 4) + tuple(2 * k for k in d), np.float32))  # start TensorFlow
    if method == "single":  # the reference: one forward pass over the padded box, timed alone
        padded = tuple(-(-s // k) * k for s, k in zip(crop, d, strict=True))
        vol, background = inf.normalize_crop(image[box])
        grid = np.zeros((4,) + padded, np.float32)
        off = [(p - s) // 2 for p, s in zip(padded, crop, strict=True)]
        inner = tuple(slice(o, o + s) for o, s in zip(off, crop, strict=True))
        grid[:, :, :, inner[2]] = background
        grid[(slice(None),) + inner] = vol
        net = with_input_shape(model)
        report["padded"] = padded
        before = rss_gb()
        start = time.perf_counter()
        probs = net.predict_on_batch(grid[None])
    elif method == "course":
        before = rss_gb()
        start = time.perf_counter()
        probs = ev.predict_course_tiles(model, image, progress=False)
    else:
        gb = None if budget == "default" else float(budget)  # None: predict_volume takes its budget from the machine
        plan = inf.plan_windows(model, crop, max_memory_gb=gb, scan_shape=image.shape[:3])
        report.update(plan=str(plan), windows=plan.n_windows, window=plan.window, budget_gb=plan.budget_gb,
                      estimate_gb=plan.needed_gb, cost=plan.cost)
        before = rss_gb()
        start = time.perf_counter()
        probs = inf.predict_volume(model, image, max_memory_gb=gb, progress=False)
    report["seconds"] = time.perf_counter() - start
    report["grown_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6 - before
    report["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    assert np.isfinite(np.asarray(probs)).all()
    return report


def run_child(method: str, scan_file: Path, budget: str = "", quick: bool = False) -> dict:
    "Run `child` in a fresh interpreter, return its report"
    args = [sys.executable, __file__, "--child", method, str(scan_file), budget or "-"] + (["--quick"] if quick else [])
    out = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- part 2: quality
def quality(quick: bool = False) -> tuple:
    "Train a small U-Net on phantom patches; mean Dice of predict_volume (one window, several) and of the course's tiling"
    import keras
    from bts_course.phantom import make_phantom
    from bts_course.model import unet_model_3d
    from bts_course.metrics import soft_dice_loss
    from bts_course.scores import brats_region_metrics
    from bts_course.preprocess import brain_box, standardize
    from bts_course.sampling import sample_patches
    from bts_course.inference import plan_windows, predict_volume
    from bts_course.evaluation import predict_course_tiles
    from bts_course.labels import probabilities_to_labels
    # patches about the size of the head's box (38x47 here), as the course's 160x160 patches are of a real brain's box
    shape, size = (64, 64, 48), (40, 48, 16)
    keras.utils.set_random_seed(0)
    X, y = [], []
    for seed in range(10):
        case = make_phantom(seed, shape)
        for px, py, _ in sample_patches(case.image, case.label, 4, size, 0.99, rng=seed):
            X.append(standardize(px)); y.append(py)
    X, y = np.stack(X), np.stack(y)
    model = unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=3, n_base_filters=8,
                          initial_learning_rate=3e-3)
    start = time.perf_counter()
    model.fit(X, y, batch_size=4, epochs=5 if quick else 20, verbose=0)
    print(f"small U-Net trained on {len(X)} patches {size} in {time.perf_counter() - start:.0f} s", flush=True)
    scores = {"predict_volume, one window": [], "predict_volume, windows": [], "course tiles": []}
    plans = []
    for seed in range(1000, 1002 if quick else 1004):
        case = make_phantom(seed, shape)
        box = tuple(s.stop - s.start for s in brain_box(case.image))
        tight = plan_windows(model, box).needed_gb / 2  # half of what one window needs: several windows
        plans.append(plan_windows(model, box, max_memory_gb=tight).n_windows)
        for name, probs in (("predict_volume, one window", predict_volume(model, case.image, max_memory_gb=100, progress=False)),
                            ("predict_volume, windows", predict_volume(model, case.image, max_memory_gb=tight, progress=False)),
                            ("course tiles", predict_course_tiles(model, case.image, patch_size=size, progress=False))):
            scores[name].append(brats_region_metrics(probabilities_to_labels(probs), case.label)["Dice"])
    print(f"windows in the split runs: {plans}")
    return {name: np.mean(rows, axis=0) for name, rows in scores.items()}, list(scores["course tiles"][0].index)


# ---------------------------------------------------------------- main
def main(quick: bool = False):
    from bts_course.inference import activation_bytes, default_memory_gb
    fixed_gb = QUICK_GB if quick else FULL_GB
    names = ["small", "large"] if quick else ["small", "usual", "large"]
    tiles_on = "small" if quick else "usual"
    net = course_network(quick)
    print(f"machine: {os.cpu_count()} CPU cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 1e9:.1f} GB; "
          f"default budget now {default_memory_gb():.1f} GB; network: {'8' if quick else '32'} base filters, "
          f"activations {activation_bytes(net) / 1e3:.2f} KB per voxel", flush=True)
    rows, course = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            scan = Path(tmp) / f"{name}.npy"
            np.save(scan, make_scan(name))
            # each run twice, interleaved, keeping the faster: other work on a shared machine slows one run, rarely two
            runs = [(run_child("single", scan, quick=quick), run_child("volume", scan, "default", quick),
                     run_child("volume", scan, str(fixed_gb), quick)) for _ in range(REPEATS)]
            r = {key: min((run[i] for run in runs), key=lambda v: v["seconds"])
                 for i, key in enumerate(("single", "default", "fixed"))}
            rows[name] = r
            print(f"  {name}: box {r['single']['box']}: one pass {r['single']['seconds']:.1f} s; "
                  f"default: {r['default']['plan']}, {r['default']['seconds']:.1f} s; "
                  f"{fixed_gb:g} GB: {r['fixed']['plan']}, {r['fixed']['seconds']:.1f} s", flush=True)
            if name == tiles_on:
                course = run_child("course", scan, quick=quick)
                print(f"  course tiles on {SCANS[name]}: {course['seconds']:.1f} s", flush=True)
            scan.unlink()
    print(f"\n{'brain box':<14}{'one pass':>10}  {'default budget':<40}{f'{fixed_gb:g} GB budget':<40}")
    for r in rows.values():
        cells = []
        for key in ("default", "fixed"):
            v = r[key]
            cells.append(f"{v['seconds']:6.1f} s {v['seconds'] / r['single']['seconds']:.2f}x {v['windows']:>2} win "
                         f"{v['grown_gb']:4.1f}/{v['budget_gb']:4.1f} GB")
        box = "x".join(map(str, r["single"]["box"]))
        print(f"{box:<14}{r['single']['seconds']:>8.1f} s  {cells[0]:<40}{cells[1]:<40}")
    print("(seconds, x the one-pass time, windows, memory grown / budget; one pass grew "
          + ", ".join(f"{r['single']['grown_gb']:.1f}" for r in rows.values()) + " GB)")
    ours = rows[tiles_on]["default"]
    print(f"\ncourse tiles on the {tiles_on} phantom ({'x'.join(map(str, SCANS[tiles_on]))} scan): {course['seconds']:.1f} s, "
          f"{course['grown_gb']:.1f} GB -> predict_volume is {course['seconds'] / ours['seconds']:.1f}x faster (target >= 4x)")
    worst = {key: max(r[key]["seconds"] / r["single"]["seconds"] for r in rows.values()) for key in ("default", "fixed")}
    within = all(r[k]["grown_gb"] <= r[k]["budget_gb"] for r in rows.values() for k in ("default", "fixed"))
    print(f"worst ratio to one pass: default budget {worst['default']:.2f}x (target <= 1.1), {fixed_gb:g} GB {worst['fixed']:.2f}x "
          f"(target <= 1.25); memory {'within' if within else 'NOT within'} the budget in every run", flush=True)
    print("\nquality (small U-Net trained on phantom patches, mean Dice over unseen phantoms):", flush=True)
    dice, regions = quality(quick)
    print(f"{'':<28}" + "".join(f"{r:>18}" for r in regions))
    for name, values in dice.items():
        print(f"{name:<28}" + "".join(f"{v:>18.4f}" for v in values))
    if not quick:
        change = np.abs(dice["predict_volume, one window"] - np.array(BEFORE)).max()
        print(f"predict_volume against its Dice before this planning ({' / '.join(map(str, BEFORE))}): largest difference "
              f"{change:.4f} (target <= 0.005)")
    gap = np.abs(dice["predict_volume, windows"] - dice["predict_volume, one window"]).max()
    print(f"split into windows (in a box this small every voxel is near a cut) against one window: largest Dice "
          f"difference {gap:.4f}")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        report = child(sys.argv[2], sys.argv[3], sys.argv[4], "--quick" in sys.argv[5:])
        print(json.dumps(report, default=lambda o: list(o) if isinstance(o, tuple) else float(o)))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        main(quick="--quick" in sys.argv[1:])
