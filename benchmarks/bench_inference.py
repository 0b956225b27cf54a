"""Whole-scan inference: `predict_volume` against the course's tiling, and against the arithmetic floor.

Part 1, speed and memory, with the course's network (depth 4, 32 base filters; untrained weights
are fine for timing) on a 240x240x155x4 phantom:
- the course's method: non-overlapping 160x160x16 tiles over the whole (padded) volume, one at a
  time, stitched (`predict_course_tiles`, 40 forward passes);
- `predict_volume` with its defaults;
- the floor: the network's multiply-accumulates (MACs, counted from its convolution layers) over
  the voxels processed, at this machine's float32 matrix-multiply rate (best of np.matmul and
  tf.matmul on 4096x4096). Also printed: the floor over the brain box alone, the least any method
  that predicts every brain voxel must process.
Each method runs in a fresh process, so its peak memory (ru_maxrss) is its own. The phantom's
head box (about 141x176x128 voxels in the 240x240x155 grid) is the size of a real BraTS brain's.

Part 2, quality: a small U-Net trained on 40x48x16 patches of 64x64x48 phantoms (a patch covers
about as much of a slice as the head's box, about 38x47, like the course's 160x160 patches of a
real brain's 141x176 box in 240x240 scans);
mean Dice over unseen phantoms of `predict_volume` and of the course's tiling (tiles of the
training patch size).

Run: `.venv/bin/python benchmarks/run.py inference` (about 8 minutes on two CPU cores).
"""
import json, math, os, resource, subprocess, sys, time
from pathlib import Path

import numpy as np

GRID = (240, 240, 155)


# ---------------------------------------------------------------- helpers (run in the children too)
def phantom(variant: str):
    "The test scan: make_phantom(0) at 240x240x155, whose head box (about 141x176x128) is the size of a real brain's"
    from bts_course.phantom import make_phantom
    return make_phantom(0, GRID).image


def conv_macs_per_voxel(model) -> float:
    "Multiply-accumulates of every convolution of `model`, per input voxel (counted from a symbolic pass)"
    import keras
    from bts_course.model import model_io, model_divisor
    channels, _ = model_io(model)
    probe = tuple(4 * d for d in model_divisor(model))
    macs = []

    def record(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv3DTranspose)):
            x = keras.tree.flatten(args)[0]
            k = math.prod(layer.kernel_size)
            if isinstance(layer, keras.layers.Conv3DTranspose):  # each input voxel scatters a kernel
                macs.append(k * x.shape[-1] * layer.filters * math.prod(x.shape[1:4]))
            else:
                macs.append(k * x.shape[-1] * layer.filters * math.prod(out.shape[1:4]))
        return out

    keras.models.clone_model(model, input_tensors=keras.Input((channels,) + probe),
                             clone_function=lambda layer: layer, call_function=record)
    return sum(macs) / math.prod(probe)


def matmul_gflops(n: int = 4096, repeats: int = 4) -> float:
    "Best float32 matrix-multiply rate of np.matmul and tf.matmul on n x n matrices, GFLOP/s (best of `repeats` each)"
    import tensorflow as tf
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = math.inf
    a @ a
    for _ in range(repeats):
        t = time.perf_counter(); a @ a; best = min(best, time.perf_counter() - t)
    ta = tf.constant(a)
    tf.matmul(ta, ta).numpy()
    for _ in range(repeats):
        t = time.perf_counter(); tf.matmul(ta, ta).numpy(); best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def child(method: str, variant: str) -> dict:
    "Run one method on one scan in this (fresh) process; report time, plan and peak memory"
    import keras
    from bts_course.model import unet_model_3d
    from bts_course import evaluation as ev
    from bts_course import inference as inf
    from bts_course.preprocess import brain_box
    keras.utils.set_random_seed(0)
    model = unet_model_3d()  # the course's network, untrained
    image = phantom(variant)
    box = brain_box(image)
    crop = tuple(s.stop - s.start for s in box)
    report = {"box": crop}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    start = time.perf_counter()
    if method == "course":
        probs = ev.predict_course_tiles(model, image)
        report["voxels"] = 40 * 160 * 160 * 16
        report["windows"] = 40
    else:
        probs = inf.predict_volume(model, image)
        window, corners, _ = inf.plan_windows(model, crop)  # the plan predict_volume followed (same defaults)
        report.update(window=window, windows=len(corners), voxels=len(corners) * math.prod(window),
                      estimate_gb=inf.activation_bytes(model) * math.prod(window) / 1e9)
    report["seconds"] = time.perf_counter() - start
    report["rss_before_gb"] = before
    report["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    assert probs.shape == GRID + (3,) and np.isfinite(probs).all()
    return report


def run_child(method: str, variant: str) -> dict:
    "Run `child` in a fresh interpreter (its progress bar on our stderr), return its report"
    out = subprocess.run([sys.executable, __file__, "--child", method, variant], stdout=subprocess.PIPE, text=True,
                         check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- part 2: quality
def quality(n_test: int = 4) -> dict:
    "Train a small U-Net on phantom patches; mean Dice of predict_volume and of the course's tiling on unseen phantoms"
    import keras
    from bts_course.phantom import make_phantom
    from bts_course.model import unet_model_3d
    from bts_course.metrics import soft_dice_loss, brats_region_metrics
    from bts_course.preprocess import standardize
    from bts_course.sampling import sample_patches
    from bts_course.inference import predict_volume
    from bts_course.evaluation import predict_course_tiles
    from bts_course.data import probabilities_to_labels
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
    model.fit(X, y, batch_size=4, epochs=20, verbose=0)
    print(f"small U-Net trained on {len(X)} patches {size} in {time.perf_counter() - start:.0f} s", flush=True)
    scores = {"predict_volume": [], "course tiles": []}
    for seed in range(1000, 1000 + n_test):
        case = make_phantom(seed, shape)
        for name, probs in (("predict_volume", predict_volume(model, case.image, progress=False)),
                            ("course tiles", predict_course_tiles(model, case.image, tile=size, progress=False))):
            scores[name].append(brats_region_metrics(probabilities_to_labels(probs), case.label)["Dice"])
    return {name: np.mean(rows, axis=0) for name, rows in scores.items()}, list(scores["course tiles"][0].index)


# ---------------------------------------------------------------- main
def main():
    from bts_course.model import unet_model_3d
    rate = matmul_gflops()
    macs = conv_macs_per_voxel(unet_model_3d())
    print(f"machine: {os.cpu_count()} CPU cores, float32 matmul {rate:.0f} GFLOP/s; "
          f"course network: {macs / 1e3:,.1f} kMAC per voxel", flush=True)
    course = run_child("course", "phantom")
    ours = run_child("volume", "phantom")
    again = matmul_gflops()  # the machine may have been busier at the start: keep the best rate seen
    print(f"float32 matmul measured again: {again:.0f} GFLOP/s; using the best, {max(rate, again):.0f} GFLOP/s")
    rate = max(rate, again)
    floor = lambda voxels: 2 * macs * voxels / (rate * 1e9)
    for name, r in (("course tiles", course), ("predict_volume, phantom", ours)):
        print(f"  {name}: {2 * macs * r['voxels'] / r['seconds'] / 1e9:.0f} GFLOP/s of convolutions")
    print(f"\n{'240x240x155 scan':<44}{'time':>8}{'windows':>9}{'Mvoxels':>9}{'peak RSS':>10}")
    print(f"{'course: 160x160x16 tiles, one at a time':<44}{course['seconds']:>7.1f}s{course['windows']:>9}"
          f"{course['voxels'] / 1e6:>9.2f}{course['peak_gb']:>8.2f}GB")
    for name, r in (("predict_volume, phantom", ours),):
        print(f"{name:<44}{r['seconds']:>7.1f}s{r['windows']:>9}{r['voxels'] / 1e6:>9.2f}{r['peak_gb']:>8.2f}GB"
              f"   window {tuple(r['window'])}, brain box {tuple(r['box'])}")
    for name, r in (("phantom", ours),):
        box_voxels = math.prod(r["box"])
        print(f"\n{name}: predict_volume is {course['seconds'] / r['seconds']:.2f}x faster than the course's tiles "
              f"(target >= 3x); it processes {course['voxels'] / r['voxels']:.2f}x fewer voxels")
        print(f"  floor over the {r['voxels'] / 1e6:.2f} M voxels processed: {floor(r['voxels']):.1f} s -> "
              f"predict_volume takes {r['seconds'] / floor(r['voxels']):.2f}x the floor (target within 2x)")
        print(f"  floor over the brain box alone ({box_voxels / 1e6:.2f} M voxels): {floor(box_voxels):.1f} s -> "
              f"{r['seconds'] / floor(box_voxels):.2f}x")
        print(f"  memory: peak {r['peak_gb']:.2f} GB (target < 8 GB); activations estimated {r['estimate_gb']:.2f} GB, "
              f"measured about {r['peak_gb'] - r['rss_before_gb']:.2f} GB above the {r['rss_before_gb']:.2f} GB before predicting")
    print(f"course tiles: {course['seconds'] / floor(course['voxels']):.2f}x the floor over its "
          f"{course['voxels'] / 1e6:.1f} M voxels", flush=True)
    print("\nquality (small U-Net trained on phantom patches, mean Dice over 4 unseen phantoms):", flush=True)
    dice, regions = quality()
    print(f"{'':<18}" + "".join(f"{r:>18}" for r in regions))
    for name, values in dice.items():
        print(f"{name:<18}" + "".join(f"{v:>18.3f}" for v in values))
    verdict = "at least" if np.all(dice["predict_volume"] >= dice["course tiles"] - 1e-9) else "NOT at least"
    print(f"predict_volume's Dice is {verdict} the course tiling's in every region")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        print(json.dumps(child(sys.argv[2], sys.argv[3]), default=lambda o: list(o) if isinstance(o, tuple) else float(o)))
    else:
        main()
