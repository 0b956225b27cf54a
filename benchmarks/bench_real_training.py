"""Training on real patients: the measurements behind the shipped model's recipe (needs ../shared/data/brats2018).

1. Learning rate. The recipe's network (depth 4, 8 base filters, instance normalisation, in the precision that
   `--mixed-precision` picks here) trained for the
   same number of steps on the same real patches from the same seed at the course's 1e-5 and at 1e-3: training
   loss at the end, and validation soft dice loss and dice on patches of the validation patients.
2. Precision. A step in float32 and in bfloat16 mixed precision side by side: bfloat16 pays only on a CPU with
   bfloat16 instructions (AVX512-BF16, AMX), which is what `bts train --mixed-precision` checks.
   Then model size for the budget: time of one training step at 8, 12 and 16 base filters on the recipe's patch, and
   what each would ship: parameters and float32 weights in MB, against the 10 MB the package allows.
3. Where a step's time goes. Reading only the training window of a stored patch against reading all of it and
   cropping after. The data pipeline (reading an HDF5 patch's window, standardising, flipping,
   jittering: the generator alone) beside the computation (`train_on_batch` on a ready batch); then `model.fit`
   through the generator with reading threads, against the same steps on ready arrays: the share of step time
   the pipeline still costs when it runs beside the computation. The computation's arithmetic rate
   (GFLOP/s, from `forward_macs`: a training step is about three forward passes) beside this machine's peak,
   a large matrix product in float32 and in bfloat16 measured in the same run.

0. The targets, against the shipped model's card: mean whole-scan Dice of its validation patients per BraTS region
   (`pretrained.DICE_TARGETS`: whole tumour >= 0.85, tumour core >= 0.75, enhancing tumour >= 0.70), and the course's
   dice_coefficient on course-format patches of a patient it never saw (above the course model's published 0.5152),
   each met or not.

Uses the recipe's patches if `recipes/brats2018/train.sh` has cut them (`$BTS_WORK/patches`), else cuts a few
cases of `../shared/data/brats2018` into a temporary folder.
"""
import os, tempfile, time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "brats2018"
WORK = Path(os.environ.get("BTS_WORK", Path.home() / ".cache" / "bts_course" / "brats2018"))
PATCH, BATCH, STEPS = (128, 128, 64), 2, 120


def patches(tmp: Path) -> Path:
    "The recipe's patch folder, or a small one cut here from four of the real cases"
    if (WORK / "patches" / "config.json").is_file(): return WORK / "patches"
    from bts_course.dataset import build_patch_dataset, read_split, split_lists
    split = split_lists(read_split(REPO / "recipes" / "brats2018" / "split.json"))
    src = tmp / "cases"; src.mkdir()
    chosen = {"train": split["train"][:3], "valid": split["valid"][:1]}
    for name in chosen["train"] + chosen["valid"]: (src / name).symlink_to(SHARED / name)
    return build_patch_dataset(src, tmp / "patches", patches_per_case=8, patch_size=(144, 144, 80), background_threshold=0.995,
                               tumour_patch_fraction=0.67, split=chosen, progress=False)


def recipe_model(lr: float, filters: int = 8, policy: str | None = None):
    "The recipe's network, in `policy` (default: what `bts train --mixed-precision` picks on this machine)"
    import keras
    from bts_course.metrics import soft_dice_loss
    from bts_course.model import unet_model_3d
    from bts_course.training import _mixed_policy
    keras.mixed_precision.set_global_policy(policy or _mixed_policy(True) or "float32")
    try: return unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=4, n_base_filters=filters,
                              layer_normalization="instance", initial_learning_rate=lr)
    finally: keras.mixed_precision.set_global_policy("float32")


def generators(data: Path):
    from bts_course.training import VolumeDataGenerator, patch_files
    train = VolumeDataGenerator(data, "train", batch_size=BATCH, patch_size=PATCH, flip=True, intensity_jitter=0.1,
                                batches_per_epoch=STEPS, seed=0)
    valid_files = patch_files(data, "valid")
    valid_files = [valid_files[int(i)] for i in np.linspace(0, len(valid_files) - 1, min(12, len(valid_files))).round()]
    return train, VolumeDataGenerator(data, "valid", files=valid_files, batch_size=BATCH, patch_size=PATCH)


def learning_rate(data: Path):
    import keras
    train, valid = generators(data)
    print(f"{STEPS} steps of {BATCH} patches of {'x'.join(map(str, PATCH))} from {len(train.files)} training patches; "
          f"validation on {len(valid.files)} patches of other patients")
    results = {}
    for lr in (1e-5, 1e-3):
        keras.utils.set_random_seed(0)
        train.set_epoch(0)
        model = recipe_model(lr)
        start = time.perf_counter()
        history = model.fit(train, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        loss, dice = model.evaluate(valid, verbose=0)[:2]
        results[lr] = (history.history["loss"][-1], loss, dice)
        print(f"learning rate {lr:g}: training loss {history.history['loss'][-1]:.4f}, validation loss {loss:.4f}, "
              f"validation dice {dice:.4f} ({seconds / STEPS:.2f} s per step)")
    (_, v5, d5), (_, v3, d3) = results[1e-5], results[1e-3]
    print(f"after {STEPS} steps: the course's 1e-5 lowered the validation loss to {v5:.4f}, 1e-3 to {v3:.4f}; "
          f"validation dice {d5:.4f} against {d3:.4f} ({d3 / max(d5, 1e-9):.1f}x)")


def median_time(run, repeats: int = 3) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
    return float(np.median(times))


def precision():
    "A training step of the recipe's network in float32 and in bfloat16 mixed precision, side by side, and what `--mixed-precision` picks"
    import numpy as np
    from bts_course.training import _mixed_policy, cpu_has_bfloat16
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(BATCH, 4, 64, 64, 32)).astype(np.float32), (rng.random((BATCH, 3, 64, 64, 32)) > 0.9).astype(np.float32)
    times = {}
    for policy in ("float32", "mixed_bfloat16"):
        m = recipe_model(1e-3, policy=policy)
        m.train_on_batch(x, y)
        times[policy] = median_time(lambda m=m: m.train_on_batch(x, y))
    print(f"a training step at 64x64x32, batch {BATCH}: float32 {times['float32']:.2f} s, bfloat16 {times['mixed_bfloat16']:.2f} s "
          f"({times['mixed_bfloat16'] / times['float32']:.2f}x float32's); this CPU "
          f"{'has' if cpu_has_bfloat16() else 'has no'} bfloat16 instructions, so --mixed-precision trains in "
          f"{_mixed_policy(True) or 'float32'}")


def model_size():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(BATCH, 4) + PATCH).astype(np.float32)
    y = (rng.random((BATCH, 3) + PATCH) > 0.9).astype(np.float32)
    base = None
    for filters in (8, 12, 16):
        model = recipe_model(1e-3, filters)
        step = median_time(lambda m=model: m.train_on_batch(X, y), repeats=2)
        base = base or step
        mb = 4 * model.count_params() / 1e6
        print(f"{filters:>2} base filters: {model.count_params():>9,} parameters, {mb:4.1f} MB of float32 weights "
              f"({'fits' if mb <= 10 else 'over'} 10 MB); {step:.2f} s per step, {step / base:.1f}x the 8-filter step")


def peak_gflops(dtype: str, n: int = 4096) -> float:
    "GFLOP/s of an n x n matrix product in TensorFlow on this machine, in `dtype`"
    import tensorflow as tf
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.linalg.matmul(x, x))
    seconds = median_time(lambda: matmul(a).numpy(), repeats=3)
    return 2 * n ** 3 / seconds / 1e9


def where_time_goes(data: Path):
    import keras
    from bts_course.model import forward_macs
    train, _ = generators(data)
    n = 12
    start = time.perf_counter()
    batches = [train[i] for i in range(n)]
    pipeline = (time.perf_counter() - start) / n
    box = tuple(slice(0, p) for p in PATCH)
    indices = range(20, 20 + 2 * n)
    start = time.perf_counter(); [train.load(i) for i in indices]; whole = (time.perf_counter() - start) / len(indices)
    start = time.perf_counter(); [train.load(i, box) for i in indices]; window = (time.perf_counter() - start) / len(indices)
    print(f"reading and converting one patch: the whole stored patch {whole:.2f} s (cropped after), only the window "
          f"{window:.2f} s (what the generator does): {whole / window:.1f}x less")
    model = recipe_model(1e-3)
    X, y = batches[0]
    compute = median_time(lambda: model.train_on_batch(X, y), repeats=4)
    print(f"one step of {BATCH} patches: data pipeline alone {pipeline:.2f} s, computation alone {compute:.2f} s "
          f"({100 * pipeline / compute:.0f} % of it, if they ran one after the other)")
    ready = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    keras.utils.set_random_seed(0)
    model.fit(*ready, batch_size=BATCH, epochs=1, verbose=0)  # warm: traced and compiled
    start = time.perf_counter(); model.fit(*ready, batch_size=BATCH, epochs=1, verbose=0); on_arrays = time.perf_counter() - start
    from bts_course.training import VolumeDataGenerator
    threaded = VolumeDataGenerator(data, "train", batch_size=BATCH, patch_size=PATCH, flip=True, intensity_jitter=0.1,
                                   batches_per_epoch=n, seed=0, workers=2, use_multiprocessing=False, max_queue_size=4)
    start = time.perf_counter(); model.fit(threaded, epochs=1, verbose=0); on_generator = time.perf_counter() - start
    print(f"{n} steps through model.fit: ready arrays {on_arrays:.1f} s, the generator with two reading threads "
          f"{on_generator:.1f} s: the pipeline costs {100 * (on_generator - on_arrays) / on_generator:+.1f} % of step time")
    flops = 3 * 2 * forward_macs(model, PATCH) * BATCH / compute
    f32, bf16 = peak_gflops("float32"), peak_gflops("bfloat16")
    print(f"computation: {flops / 1e9:.0f} GFLOP/s (bfloat16 convolutions); this machine's matrix product: float32 "
          f"{f32:.0f} GFLOP/s, bfloat16 {bf16:.0f} GFLOP/s: the training step runs at {100 * flops / 1e9 / bf16:.0f} % "
          f"of the bfloat16 peak ({100 * flops / 1e9 / f32:.0f} % of float32's)")


COURSE_PATCH_DICE = 0.5152  # the course model's published dice_coefficient on its validation patches (COURSE.md)


def targets():
    "The shipped model's card against the targets: one line per target, met or not"
    from bts_course.pretrained import DICE_TARGETS, _targets_met, read_card
    card = read_card()
    mean = card["validation"]["mean"]
    held = card.get("decisions", {}).get("dice_at_thresholds_held_out")
    print(f"{len(card['validation']['cases'])} validation patients, whole scans through predict_volume at threshold 0.5"
          + (" and at the card's thresholds, each case scored with thresholds chosen on the others:" if held else ":"))
    for region, met in _targets_met(card).items():
        print(f"{region:16s} mean Dice {mean[f'{region} Dice']:.4f}" + (f", held out {held[region]:.4f}" if held else "")
              + f" (target >= {(card.get('targets') or DICE_TARGETS)[region]}): {'met' if met else 'not met'}")
    course = card.get("course_patches")
    if course:
        print(f"course-format patches of an unseen patient ({course['n']} of {course['folder']}): dice_coefficient "
              f"{course['dice_coefficient']:.4f} (course model {COURSE_PATCH_DICE}): "
              f"{'met' if course['dice_coefficient'] > COURSE_PATCH_DICE else 'not met'}")
    print(f"shipped patch {card['shipped_patch']['name']}: dice_coefficient {card['shipped_patch']['dice_coefficient']:.4f}")


def main():
    print("--- targets (the shipped model's card)"); targets()
    if not SHARED.is_dir() and not (WORK / "patches" / "config.json").is_file():
        print(f"skipped: no real cases at {SHARED} and no recipe patches at {WORK / 'patches'}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = patches(Path(tmp))
        print(f"patches: {data}")
        print("\n--- learning rate"); learning_rate(data)
        print("\n--- precision"); precision()
        print("\n--- model size"); model_size()
        print("\n--- where a training step's time goes"); where_time_goes(data)


if __name__ == "__main__":
    main()
