"""Whole-scan inference: is `predict_volume` at the machine's compute limit, and is its plan the fastest?

With the course's network (depth 4, 32 base filters; untrained weights are fine for timing), every
measurement in a fresh process, side by side in one run:

Part 0, the machine and the network: the peak of a large float32 matmul (TensorFlow, 4096x4096),
before and after the convolutions; the network's throughput, GFLOP/s from its own FLOP count
(`ForwardCost.gflops`), at several window sizes -- the course's 160x160x16 tile, cubes, and the window
`predict_volume` plans for the usual brain box -- and its share of the matmul peak (target: 80 % at the
chosen window). Both in wall time and in CPU time (the CPU seconds the process spent: steadier on a
shared machine). Also what measuring the forward cost takes the first time, against one pass.

Part 1, the brain-box sweep: phantoms whose brain boxes span BraTS, from small (about 120x150x110)
through the usual phantom (about 141x176x128 in a 240x240x155 scan) to large (about 160x200x160):
- one forward pass of the network over the box padded to multiples of its divisor: the least work any
  method that predicts every brain voxel can do (the reference);
- `predict_volume` at the default budget (from the machine) and at 4 GB;
- on the usual phantom, the course's method: non-overlapping 160x160x16 tiles over the whole scan,
  one at a time, stitched (`predict_course_tiles`). Target: `predict_volume` at least 5x faster.
Every run is a fresh process, so its peak memory (ru_maxrss) is its own; "memory" is how much the
process grew during the call, which is what a budget bounds (target: within the budget). Each run
times the call twice: the first call in the process pays for the memory TensorFlow takes (page
faults, counted), a second call reuses it, as every scan after the first of a `bts predict` folder
does.

Part 2, the plan against the others: on the usual phantom, at the default budget and at 4 GB, the
candidate plans the cost model ranks fastest (`--candidates`, 4 by default: timing all of the ~150
that fit would take hours on two cores), each run as a fixed window and batch size, beside
`predict_volume`'s own choice (its plan's runs averaged). Target: `predict_volume` within 1.1x of the best
plan measured.

Part 3, quality: a small U-Net trained on 40x48x16 patches of 64x64x48 phantoms; mean Dice over
unseen phantoms of `predict_volume` (one window, and split into windows by a small budget), of the
course's tiling, and of `predict_volume(flips="all")` (test-time augmentation) with its time against
the plain prediction; and of `predict_volume` as it was at commit 5e77f09 (before windows were planned
by the brain box and the measured cost: its code from `git archive`, run in a fresh process on the same
model and phantoms). Target: one-window Dice within 0.005 of that.

Run: `.venv/bin/python benchmarks/run.py inference` (about 35 minutes on two CPU cores), or
`.venv/bin/python benchmarks/bench_inference.py --quick` (8 base filters, a 1 GB budget in place of
4 GB, two boxes, 2 candidates, a shorter quality part: a few minutes, to check the benchmark).

Test-time augmentation on real cases (Dice, uncertainty and cost with the shipped model) is
`benchmarks/bench_decisions.py`'s.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

# scan grid -> the phantom's brain box (make_phantom(0, grid)): small, usual, large
SCANS = {"small": (204, 204, 134), "usual": (240, 240, 155), "large": (271, 272, 193)}
FULL_GB, QUICK_GB = 4.0, 1.0  # the fixed budget; the quick network has about a quarter of the activations
BEFORE_COMMIT = "5e77f09"  # predict_volume before windows were planned by the brain box and the measured cost
ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_WINDOWS = [(160, 160, 16), (64, 64, 64), (96, 96, 96)]  # plus the window planned for the usual box


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
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def load_averages() -> str:
    "The machine's 1, 5 and 15 minute load averages"
    try: return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError: return "unknown"


def matmul_gflops(n: int = 4096, repeats: int = 5) -> tuple:
    "The best `(wall, CPU)` GFLOP/s of an `n`x`n` float32 matmul in TensorFlow, of `repeats` timed runs"
    import tensorflow as tf
    a, b = tf.random.normal((n, n), seed=1), tf.random.normal((n, n), seed=2)
    run = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    run(a, b).numpy()
    wall, cpu = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        run(a, b).numpy()
        wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)
    return 2 * n ** 3 / min(wall) / 1e9, 2 * n ** 3 / min(cpu) / 1e9


# ---------------------------------------------------------------- the runs, each in a fresh process
def child(method: str, scan_file: str, spec: dict, quick: bool) -> dict:
    "Run one method on one scan in this (fresh) process; report time (wall and CPU), plan and memory"
    from bts_course import costs, evaluation as ev
    from bts_course import inference as inf
    from bts_course.model import model_divisor, round_to_divisor, with_input_shape
    from bts_course.preprocess import brain_box, normalize_crop
    model = course_network(quick)
    d = model_divisor(model)
    if method == "cost":  # measure the forward cost (kept in $BTS_CACHE_DIR for every later run), and one pass to compare
        start = time.perf_counter()
        cost = costs.forward_cost(model)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "coefficients": {k: getattr(cost, k) for k in costs.COST_TERMS},
                "parallelism": cost.parallelism, "fit_error": cost.fit_error}
    net = with_input_shape(model)
    net.predict_on_batch(np.zeros((1, 4) + tuple(2 * k for k in d), np.float32))  # start TensorFlow
    if method == "throughput":  # the network's GFLOP/s at several windows, beside the matmul peak
        cost = costs.forward_cost(model)
        rows, peaks = [], [matmul_gflops()]
        for window in map(tuple, spec["windows"]):
            x = np.random.default_rng(0).standard_normal((1, 4) + window, dtype=np.float32)
            net.predict_on_batch(x)  # the first pass of a shape builds its kernels
            wall, cpu = [], []
            for _ in range(2):
                c, w = time.process_time(), time.perf_counter()
                net.predict_on_batch(x)
                wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)
            gflop = float(cost.gflops(window)[0])
            rows.append({"window": window, "gflop": gflop, "wall": min(wall), "cpu": min(cpu), "predicted": cost.seconds(window),
                         "predicted_cpu": cost.clock_seconds(window)})
        peaks.append(matmul_gflops())
        return {"rows": rows, "peak_wall": max(p[0] for p in peaks), "peak_cpu": max(p[1] for p in peaks)}
    image = np.load(scan_file)
    box = brain_box(image)
    crop = tuple(s.stop - s.start for s in box)
    report = {"box": crop}
    if method == "single":  # the reference: one forward pass over the padded box, timed alone
        padded = round_to_divisor(crop, d)
        grid, _ = inf.padded_input(*normalize_crop(image[box]), padded)
        report["padded"] = padded
        run = lambda: net.predict_on_batch(grid[None])
    elif method == "course":
        run = lambda: ev.predict_course_tiles(model, image, progress=False)
    else:
        kwargs = dict(max_memory_gb=spec.get("gb"), window=spec.get("window"), batch_size=spec.get("batch"))
        plan = inf.plan_windows(model, crop, scan_shape=image.shape[:3], **kwargs)
        kwargs["max_memory_gb"] = plan.budget_gb  # the second call keeps the plan, though TensorFlow now holds memory
        report.update(plan=str(plan), windows=plan.n_windows, window=plan.window, batch=plan.batch_size, budget_gb=plan.budget_gb,
                      estimate_gb=plan.needed_gb, cost=plan.cost, predicted=plan.predicted_s,
                      gflop=plan.n_windows * float(costs.forward_cost(model).gflops(plan.window)[0]))
        run = lambda: inf.predict_volume(model, image, progress=False, **kwargs)
    before, usage = rss_gb(), resource.getrusage(resource.RUSAGE_SELF)
    c, start = time.process_time(), time.perf_counter()
    probs = run()
    report["seconds"], report["cpu"] = time.perf_counter() - start, time.process_time() - c
    after = resource.getrusage(resource.RUSAGE_SELF)
    report.update(grown_gb=after.ru_maxrss / 1e6 - before, sys=after.ru_stime - usage.ru_stime,
                  faults=after.ru_minflt - usage.ru_minflt)
    assert np.isfinite(np.asarray(probs)).all()
    del probs
    c, start = time.process_time(), time.perf_counter()
    run()  # again in the same process: TensorFlow reuses the memory it took (the next scan of a folder)
    report["warm"], report["warm_cpu"] = time.perf_counter() - start, time.process_time() - c
    return report


def run_child(method: str, scan_file=None, quick: bool = False, **spec) -> dict:
    "Run `child` in a fresh interpreter, return its report"
    args = [sys.executable, __file__, "--child", method, str(scan_file or "-"), json.dumps(spec)] + (["--quick"] if quick else [])
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode: sys.exit(f"the {method} run failed:\n{out.stderr[-3000:]}")  # TensorFlow's start-up lines only shown then
    return json.loads(out.stdout.strip().splitlines()[-1])


def candidate_plans(quick: bool, box, scan_shape, gb, n: int) -> list:
    "The `n` plans (window, batch) the cost model predicts fastest for `box` within `gb` (None: the machine's budget)"
    from bts_course import costs, inference as inf
    model = course_network(quick)
    cost = costs.forward_cost(model)
    best = inf.plan_windows(model, box, max_memory_gb=gb, scan_shape=scan_shape)
    fits, _ = inf.window_candidates(box, best.divisor, 1e12, best.overlap_voxels, 48)  # windows as wide as the halo, as the planner prefers
    plans = []
    for window, count in fits:
        for batch in (1, 2):
            if batch > count: continue
            plan = inf.plan_windows(model, box, window=window, batch_size=batch, max_memory_gb=best.budget_gb, scan_shape=scan_shape,
                                    cost=cost)
            if plan.needed_gb <= best.budget_gb: plans.append((plan.predicted_s, window, batch))
    return [(w, b) for _, w, b in sorted(plans)[:n]]


# ---------------------------------------------------------------- part 3: quality
def small_model(quick: bool = False):
    "A small U-Net trained on phantom patches about the size of the head's box, as the course's are of a real brain's"
    import keras
    from bts_course.phantom import make_phantom
    from bts_course.model import unet_model_3d
    from bts_course.metrics import soft_dice_loss
    from bts_course.preprocess import standardize
    from bts_course.sampling import sample_patches
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
    return model, shape, size


def predictions_before(model, images: list, tmp: Path) -> list | None:
    "Probabilities of `images` by predict_volume as it was at `BEFORE_COMMIT`, same model, in a fresh process (None without git)"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_COMMIT, "bts_course"], capture_output=True)
    if archive.returncode:
        print(f"(no comparison with commit {BEFORE_COMMIT}: {archive.stderr.decode().strip()[:200]})")
        return None
    (tmp / "before").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp / "before")], input=archive.stdout, check=True)
    model.save(tmp / "model.keras")
    for i, image in enumerate(images): np.save(tmp / f"image{i}.npy", image)
    code = (f"import sys; sys.path.insert(0, {str(tmp / 'before')!r}); import keras, numpy as np\n"
            "from bts_course.inference import predict_volume\n"
            f"model = keras.models.load_model({str(tmp / 'model.keras')!r}, compile=False)\n"
            f"for i in range({len(images)}):\n"
            f"    np.save({str(tmp)!r} + f'/before{{i}}.npy', predict_volume(model, np.load({str(tmp)!r} + f'/image{{i}}.npy'), progress=False))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode: sys.exit(f"predict_volume at {BEFORE_COMMIT} failed:\n{done.stderr[-3000:]}")
    return [np.load(tmp / f"before{i}.npy") for i in range(len(images))]


def quality(quick: bool = False) -> tuple:
    "Mean Dice over unseen phantoms of predict_volume (one window, several, 8 mirrorings, as before), the course's tiling; TTA's time"
    from bts_course.phantom import make_phantom
    from bts_course.scores import brats_region_metrics
    from bts_course.preprocess import brain_box
    from bts_course.inference import plan_windows, predict_volume
    from bts_course.evaluation import predict_course_tiles
    from bts_course.labels import probabilities_to_labels
    model, shape, size = small_model(quick)
    names = ("predict_volume, one window", "predict_volume, windows", "course tiles", "predict_volume, 8 mirrorings",
             f"predict_volume at {BEFORE_COMMIT}")
    scores = {name: [] for name in names}
    plans, seconds = [], {"plain": 0.0, "flips": 0.0}
    predict_volume(model, make_phantom(999, shape).image, progress=False)  # measure the cost, start TensorFlow
    cases = [make_phantom(seed, shape) for seed in range(1000, 1002 if quick else 1004)]
    with tempfile.TemporaryDirectory() as tmp: before = predictions_before(model, [c.image for c in cases], Path(tmp))
    for k, case in enumerate(cases):
        box = tuple(s.stop - s.start for s in brain_box(case.image))
        tight = plan_windows(model, box, batch_size=1).needed_gb / 2  # half of what one window needs: several windows
        plans.append(plan_windows(model, box, max_memory_gb=tight).n_windows)
        start = time.perf_counter()
        one = predict_volume(model, case.image, max_memory_gb=100, progress=False)
        seconds["plain"] += time.perf_counter() - start
        start = time.perf_counter()
        flipped = predict_volume(model, case.image, max_memory_gb=100, flips="all", progress=False)
        seconds["flips"] += time.perf_counter() - start
        for name, probs in zip(names, (one, predict_volume(model, case.image, max_memory_gb=tight, progress=False),
                                       predict_course_tiles(model, case.image, patch_size=size, progress=False), flipped,
                                       None if before is None else before[k]), strict=True):
            if probs is None: continue
            scores[name].append(brats_region_metrics(probabilities_to_labels(probs), case.label)["Dice"])
    print(f"windows in the split runs: {plans}; 8 mirrorings took {seconds['flips'] / seconds['plain']:.1f}x the plain prediction")
    return {name: np.mean(rows, axis=0) for name, rows in scores.items() if rows}, list(scores["course tiles"][0].index)


# ---------------------------------------------------------------- main
def main(quick: bool = False, candidates: int | None = None):
    from bts_course.costs import activation_bytes, default_memory_gb
    fixed_gb = QUICK_GB if quick else FULL_GB
    candidates = candidates or (2 if quick else 4)
    names = ["small", "large"] if quick else ["small", "usual", "large"]
    main_box = "small" if quick else "usual"
    net = course_network(quick)
    print(f"machine: {os.cpu_count()} CPU cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 1e9:.1f} GB; "
          f"default budget now {default_memory_gb():.1f} GB; load averages {load_averages()} (1/5/15 min); network: "
          f"{'8' if quick else '32'} base filters, activations {activation_bytes(net) / 1e3:.2f} KB per voxel", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BTS_CACHE_DIR"] = tmp  # one measured cost for every run of this benchmark, none from an earlier one
        scans = {}
        for name in names:
            scans[name] = Path(tmp) / f"{name}.npy"
            np.save(scans[name], make_scan(name))

        # part 0
        measured = run_child("cost", quick=quick)
        single = run_child("single", scans[main_box], quick)
        print(f"\nforward cost measured in {measured['seconds']:.1f} s ({measured['seconds'] / single['seconds']:.2f}x one pass over the "
              f"{main_box} box), once per model and machine: " + ", ".join(f"{k} {v:.3g}" for k, v in measured["coefficients"].items())
              + f", parallelism {measured['parallelism']:.2f}, fit error {measured['fit_error']:.1%}", flush=True)
        ours = run_child("volume", scans[main_box], quick, gb=None)
        chosen = tuple(ours["window"])
        tp = run_child("throughput", quick=quick, windows=THROUGHPUT_WINDOWS + [chosen])
        print(f"\nthroughput: matmul 4096^2 peak {tp['peak_wall']:.0f} GFLOP/s wall, {tp['peak_cpu']:.0f} GFLOP per CPU second")
        print(f"{'window':<14}{'GFLOP':>8}{'GFLOP/s':>9}{'of peak':>9}{'per CPU s':>11}{'of peak':>9}{'measured/predicted':>20}")
        for r in tp["rows"]:
            print(f"{'x'.join(map(str, r['window'])):<14}{r['gflop']:>8.0f}{r['gflop'] / r['wall']:>9.0f}{r['gflop'] / r['wall'] / tp['peak_wall']:>9.0%}"
                  f"{r['gflop'] / r['cpu']:>11.0f}{r['gflop'] / r['cpu'] / tp['peak_cpu']:>9.0%}"
                  f"{r['wall'] / r['predicted']:>11.2f} wall {r['cpu'] / r['predicted_cpu']:.2f} CPU"
                  + ("   <- the window planned for the usual box" if tuple(r["window"]) == chosen else ""))
        print("(target: 80 % of the matmul peak at the planned window)", flush=True)

        # part 1
        rows, course = {}, None
        for name in names:
            r = {"single": single if name == main_box else run_child("single", scans[name], quick),
                 "default": ours if name == main_box else run_child("volume", scans[name], quick, gb=None),
                 "fixed": run_child("volume", scans[name], quick, gb=fixed_gb)}
            rows[name] = r
            print(f"  {name}: box {r['single']['box']}: one pass {r['single']['seconds']:.1f} s; "
                  f"default: {r['default']['plan']}, {r['default']['seconds']:.1f} s; "
                  f"{fixed_gb:g} GB: {r['fixed']['plan']}, {r['fixed']['seconds']:.1f} s", flush=True)
            if name == main_box:
                course = run_child("course", scans[name], quick)
                print(f"  course tiles on {SCANS[name]}: {course['seconds']:.1f} s", flush=True)
        print(f"\n{'brain box':<14}{'one pass':>16}  {'default budget':<50}{f'{fixed_gb:g} GB budget':<50}")
        for r in rows.values():
            cells = [f"{r[k]['seconds']:5.1f} / {r[k]['warm']:5.1f} s {r[k]['warm'] / r['single']['warm']:.2f}x {r[k]['windows']:>2} win "
                     f"{r[k]['grown_gb']:4.1f}/{r[k]['budget_gb']:4.1f} GB" for k in ("default", "fixed")]
            print(f"{'x'.join(map(str, r['single']['box'])):<14}{r['single']['seconds']:>6.1f} / {r['single']['warm']:5.1f} s  "
                  f"{cells[0]:<50}{cells[1]:<50}")
        print("(seconds of the first call in a fresh process / of a second call in the same process, x the one-pass time of a "
              "second call, windows, memory grown / budget; one pass grew " + ", ".join(f"{r['single']['grown_gb']:.1f}" for r in rows.values())
              + " GB)")
        print(f"first calls: the memory TensorFlow takes the first time costs page faults -- one pass over the {main_box} box "
              f"{single['faults'] / 1e6:.2f} M faults, {single['sys']:.1f} s of system time; predict_volume {ours['faults'] / 1e6:.2f} M, "
              f"{ours['sys']:.1f} s; the course's tiles {course['faults'] / 1e6:.2f} M, {course['sys']:.1f} s")
        for when, key in (("first call", "seconds"), ("second call", "warm")):
            print(f"course tiles on the {main_box} phantom ({'x'.join(map(str, SCANS[main_box]))} scan), {when}: {course[key]:.1f} s -> "
                  f"predict_volume ({ours[key]:.1f} s) is {course[key] / ours[key]:.2f}x faster (target >= 5x)")
        print(f"  in CPU time, first call: {course['cpu']:.0f} against {ours['cpu']:.0f} CPU s ({course['cpu'] / ours['cpu']:.2f}x); "
              f"course tiles grew {course['grown_gb']:.1f} GB")
        worst = {k: max(r[k]["warm"] / r["single"]["warm"] for r in rows.values()) for k in ("default", "fixed")}
        within = all(r[k]["grown_gb"] <= r[k]["budget_gb"] for r in rows.values() for k in ("default", "fixed"))
        print(f"worst ratio to one pass (second calls): default budget {worst['default']:.2f}x, {fixed_gb:g} GB {worst['fixed']:.2f}x; memory "
              f"{'within' if within else 'NOT within'} the budget in every run", flush=True)

        # part 2
        print(f"\nthe plan against the {candidates} plans the cost model ranks fastest ({main_box} box; each a fresh process, "
              "timed on its first call and on a second in the same process):")
        for label, gb, mine in (("default budget", None, ours), (f"{fixed_gb:g} GB", fixed_gb, rows[main_box]["fixed"])):
            box = tuple(mine["box"])
            runs = {(tuple(mine["window"]), mine["batch"]): [mine]}
            for window, batch in candidate_plans(quick, box, SCANS[main_box], gb if gb else mine["budget_gb"], candidates):
                r = run_child("volume", scans[main_box], quick, gb=mine["budget_gb"], window=list(window), batch=batch)
                runs.setdefault((tuple(window), batch), []).append(r)
            mean = {plan: {k: float(np.mean([r[k] for r in rs])) for k in ("seconds", "warm", "cpu", "predicted")} for plan, rs in runs.items()}
            ours_plan = (tuple(mine["window"]), mine["batch"])
            print(f"  {label}: predict_volume's plan {'x'.join(map(str, mine['window']))} x{mine['windows']} (batch {mine['batch']}), "
                  f"predicted {mine['predicted']:.1f} s")
            for (window, batch), m in sorted(mean.items(), key=lambda item: item[1]["warm"]):
                print(f"    {'x'.join(map(str, window)):<13} batch {batch}: first call {m['seconds']:6.1f} s, second {m['warm']:6.1f} s "
                      f"({m['cpu']:.0f} CPU s), predicted {m['predicted']:6.1f} s"
                      + (f"  <- predict_volume's (mean of {len(runs[(window, batch)])} runs)" if (window, batch) == ours_plan else ""))
            ratios = [mean[ours_plan][k] / min(m[k] for m in mean.values()) for k in ("seconds", "warm", "cpu")]
            print(f"  -> predict_volume / the best measured plan: {ratios[0]:.2f}x on a first call, {ratios[1]:.2f}x on a second, "
                  f"{ratios[2]:.2f}x in CPU time (target <= 1.1)", flush=True)
    print(f"\nload averages at the end: {load_averages()} (1/5/15 min)")

    # part 3
    print("\nquality (small U-Net trained on phantom patches, mean Dice over unseen phantoms):", flush=True)
    dice, regions = quality(quick)
    print(f"{'':<30}" + "".join(f"{r:>18}" for r in regions))
    for name, values in dice.items():
        print(f"{name:<30}" + "".join(f"{v:>18.4f}" for v in values))
    if f"predict_volume at {BEFORE_COMMIT}" in dice:
        change = np.abs(dice["predict_volume, one window"] - dice[f"predict_volume at {BEFORE_COMMIT}"]).max()
        print(f"predict_volume now against predict_volume at {BEFORE_COMMIT} (same model, same phantoms): largest Dice difference "
              f"{change:.4f} (target <= 0.005)")
    gap = np.abs(dice["predict_volume, windows"] - dice["predict_volume, one window"]).max()
    print(f"split into windows (in a box this small every voxel is near a cut) against one window: largest Dice "
          f"difference {gap:.4f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if len(sys.argv) >= 5 and sys.argv[1] == "--child":
        report = child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), "--quick" in sys.argv[5:])
        print(json.dumps(report, default=lambda o: list(o) if isinstance(o, tuple) else float(o)))
    else:
        options = argparse.ArgumentParser(description="whole-scan inference benchmark (see the module's docstring)")
        options.add_argument("--quick", action="store_true", help="a small network and fewer runs, to check the benchmark")
        options.add_argument("--candidates", type=int, help="plans timed beside predict_volume's (default 4; 2 with --quick)")
        args = options.parse_args()
        main(quick=args.quick, candidates=args.candidates)
