"""Training the small U-Net on phantoms: quality within a 5-minute CPU budget, and the cost of the data pipeline.

1. Quality. A depth-3, 8-filter U-Net on 64×64×16 phantom patches, trained with `train` for at most
   5 minutes (2 CPU cores), is scored on patches of phantom cases it never saw: Dice per class
   (prediction > 0.5, pooled over all test patches) and their mean, which should reach 0.80. The
   reference is the same network with the course's learning rate (1e-5), given a fifth of the budget;
   the two are compared on their best validation dice within that shorter time.
2. Throughput. Patches per second with `VolumeDataGenerator` reading HDF5 files, standardising and
   flipping on the fly, vs `model.fit` on pre-loaded, pre-standardised arrays (the upper bound).
   The pipeline should cost under 10 % of step time; we also time the generator alone.
3. Layout. One 3x3x3 convolution on a channels-first batch `(B, C, X, Y, Z)`, as the course builds its model,
   vs the same weights on the channels-last batch, as our U-Net computes inside: TensorFlow has no CPU kernel
   for channels-first 3D convolutions and falls back to a compiled path. Both outputs are checked equal.
"""
import tempfile, time
from pathlib import Path
import numpy as np
from bts_course.model import unet_model_3d
from bts_course.metrics import soft_dice_loss
from bts_course.data import CLASS_NAMES
from bts_course.training import VolumeDataGenerator, train
from bts_course.demo import write_phantom_dataset
import keras

BUDGET_S = 300          # training time limit of the quality run
SHAPE, PATCH = (128, 128, 64), (64, 64, 16)


def small_unet(lr):
    return lambda: unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=3, n_base_filters=8,
                                 initial_learning_rate=lr)


def pooled_dice(model, gen) -> np.ndarray:
    "Dice of each class, thresholded at 0.5, pooled over every patch of `gen`: `(3,)`"
    inter, size = np.zeros(3), np.zeros(3)
    for i in range(len(gen)):
        X, y = gen[i]
        p = model.predict(X, verbose=0) > 0.5
        t = y > 0.5
        inter += (p & t).sum(axis=(0, 2, 3, 4)); size += p.sum(axis=(0, 2, 3, 4)) + t.sum(axis=(0, 2, 3, 4))
    return 2 * inter / np.maximum(size, 1)


class Clock(keras.callbacks.Callback):
    "Seconds since the start of training and validation dice at the end of every epoch"
    def on_train_begin(self, logs=None): self.start, self.marks = time.perf_counter(), []
    def on_epoch_end(self, epoch, logs=None):
        self.marks.append((time.perf_counter() - self.start, float(logs["val_dice_coefficient"])))
    def first_time_at(self, target):
        return next((t for t, d in self.marks if d >= target), None)
    def best_by(self, seconds):
        return max([d for t, d in self.marks if t <= seconds], default=float("nan"))


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None): self.times = []
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): self.times.append(time.perf_counter() - self.t)


def quality(tmp: Path):
    t0 = time.perf_counter()
    data = write_phantom_dataset(tmp / "train", n_cases=18, patches_per_case=4, shape=SHAPE, patch_size=PATCH,
                                 valid_fraction=1 / 9, seed=0)
    test = write_phantom_dataset(tmp / "test", n_cases=8, patches_per_case=4, shape=SHAPE, patch_size=PATCH,
                                 valid_fraction=0, seed=1000)  # cases 1000-1007: never seen in training
    print(f"data: 64 train / 8 valid patches from 18 phantom cases, 32 test patches from 8 unseen cases "
          f"({time.perf_counter() - t0:.0f} s)")
    test_gen = VolumeDataGenerator(test, "train", batch_size=4, shuffle=False, random_crop=False)
    results, clocks = {}, {}
    for name, lr in [("ours (lr 1e-3)", 1e-3), ("course lr 1e-5", 1e-5)]:
        keras.utils.set_random_seed(0)
        clock = clocks[name] = Clock()
        budget = BUDGET_S if lr == 1e-3 else BUDGET_S / 5
        start = time.perf_counter()
        run = train(small_unet(lr), VolumeDataGenerator(data, "train", batch_size=2, flip=True, seed=0),
                    VolumeDataGenerator(data, "valid", batch_size=4), epochs=1000, patience=None,
                    out_dir=tmp / f"run_{lr}", time_limit=budget, verbose=0, callbacks=[clock])
        seconds = time.perf_counter() - start
        best = keras.models.load_model(run.best_path)
        dice = pooled_dice(best, test_gen)
        results[name] = dice.mean()
        per_class = ", ".join(f"{c} {d:.3f}" for c, d in zip(CLASS_NAMES, dice, strict=True))
        print(f"{name}: {len(run.history)} epochs in {seconds:.0f} s (best epoch {run.best_epoch + 1}); "
              f"unseen-case Dice: {per_class}; mean {dice.mean():.3f}")
    ours, course = clocks["ours (lr 1e-3)"], clocks["course lr 1e-5"]
    reached = ours.first_time_at(0.80)
    print(f"validation dice first >= 0.80 after {reached:.0f} s" if reached else "validation dice never reached 0.80")
    print(f"mean unseen-case Dice {results['ours (lr 1e-3)']:.3f} "
          f"({'meets' if results['ours (lr 1e-3)'] >= 0.80 else 'BELOW'} the 0.80 target within {BUDGET_S} s); "
          f"best validation dice within {BUDGET_S / 5:.0f} s: ours {ours.best_by(BUDGET_S / 5):.3f} vs the course's "
          f"lr 1e-5 {course.best_by(BUDGET_S / 5):.3f} (unseen-case mean {results['course lr 1e-5']:.3f})")


def throughput(tmp: Path):
    data = write_phantom_dataset(tmp / "tp", n_cases=8, patches_per_case=4, shape=SHAPE, patch_size=PATCH,
                                 valid_fraction=0, seed=0)
    gen = VolumeDataGenerator(data, "train", batch_size=2, flip=True)
    n = len(gen.files)
    X = np.stack([gen.sample(i, epoch=0)[0] for i in range(n)])
    y = np.stack([gen.sample(i, epoch=0)[1] for i in range(n)])
    keras.utils.set_random_seed(0)
    model = small_unet(1e-3)()
    timer = EpochTimer()
    pipe, arr = [], []
    for _ in range(3):  # interleaved, so a busy moment on the shared machine hits both alike
        # the first epoch of each fit sets up the input pipeline (and the first fit traces): not counted
        model.fit(gen, epochs=3, verbose=0, callbacks=[timer]); pipe += timer.times[1:]
        model.fit(X, y, batch_size=2, epochs=3, verbose=0, shuffle=True, callbacks=[timer]); arr += timer.times[1:]
    t_pipe, t_arr = np.median(pipe) / n, np.median(arr) / n
    load = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(len(gen)): gen[i]
        load.append((time.perf_counter() - start) / n)
        gen.on_epoch_end()
    t_load = min(load)
    print(f"pipeline (HDF5 + standardise + flip): {1 / t_pipe:.2f} patches/s; pre-loaded arrays: {1 / t_arr:.2f} patches/s; "
          f"ratio {t_arr / t_pipe:.3f}")
    print(f"pipeline overhead: {100 * (t_pipe - t_arr) / t_pipe:+.1f} % of step time from the fits "
          f"(noisy on a shared machine); generator alone {1000 * t_load:.1f} ms/patch = "
          f"{100 * t_load / t_pipe:.1f} % of the {1000 * t_pipe:.0f} ms/patch training time (target < 10 %)")


def channels_first_cost(rounds: int = 7):
    "Forward time of one convolution channels-first vs channels-last (same weights), interleaved rounds"
    rng = np.random.default_rng(0)
    x_first = rng.normal(size=(2, 32, 64, 64, 16)).astype(np.float32)
    x_last = np.ascontiguousarray(np.moveaxis(x_first, 1, -1))
    first = keras.Sequential([keras.Input(x_first.shape[1:]),
                              keras.layers.Conv3D(32, 3, padding="same", data_format="channels_first")])
    last = keras.Sequential([keras.Input(x_last.shape[1:]), keras.layers.Conv3D(32, 3, padding="same")])
    last.set_weights(first.get_weights())
    np.testing.assert_allclose(np.moveaxis(first.predict(x_first, verbose=0), 1, -1), last.predict(x_last, verbose=0),
                               atol=1e-4)  # (also the warm-up: the channels-first path compiles here)
    times = {"first": [], "last": []}
    for _ in range(rounds):
        for name, model, x in (("first", first, x_first), ("last", last, x_last)):
            start = time.perf_counter()
            model.predict(x, verbose=0)
            times[name].append(time.perf_counter() - start)
    t_first, t_last = np.median(times["first"]), np.median(times["last"])
    print(f"one 3x3x3 convolution, 32 -> 32 channels, batch {x_first.shape}: channels-first {1000 * t_first:.0f} ms, "
          f"channels-last {1000 * t_last:.0f} ms; ratio {t_first / t_last:.1f}x (median of {rounds})")


def main():
    channels_first_cost()
    with tempfile.TemporaryDirectory() as d:
        throughput(Path(d))
        quality(Path(d))


if __name__ == "__main__":
    main()
