"""Patch sampling on full-size 240x240x155 labels: the course's rejection loop vs the exact sampler.

Run: `.venv/bin/python benchmarks/run.py sampling`

Three regimes, each measured side by side in one run, cost per accepted patch:
- common: the phantom's tumour at the course's 95 % threshold (valid corners are common);
- rare: a stricter threshold that only about 1 % of corners meet;
- none: a label whose tumour is too small for any patch to qualify (time until each method says so).
`exact` is `sample_patches` with the summed-volume table spread over 20 patches; `rejection` is the
course's loop, which one-hot encodes every candidate; `get_sub_volume` is our fixed loop, which counts
background before any one-hot. Targets (issue 3): exact no slower than rejection where corners are common,
at least 10x faster where they are rare, and its error at least 10x sooner where there are none.
"""
import time

import numpy as np

from bts_course.phantom import make_phantom
from bts_course.data import one_hot
from bts_course.sampling import BACKGROUND_THRESHOLD, SamplingError, get_sub_volume, sample_patches, summed_volume_table, window_sums

SIZE = (160, 160, 16)
N_EXACT = 20


def course_get_sub_volume(image, label, orig_x=240, orig_y=240, orig_z=155, output_x=160, output_y=160, output_z=16,
                          num_classes=4, max_tries=1000, background_threshold=0.95):
    "The course's method (with each corner drawn from its own axis): one-hot every candidate, read its background share"
    tries = 0
    while tries < max_tries:
        start_x = np.random.randint(0, orig_x - output_x + 1)
        start_y = np.random.randint(0, orig_y - output_y + 1)
        start_z = np.random.randint(0, orig_z - output_z + 1)
        y = label[start_x: start_x + output_x, start_y: start_y + output_y, start_z: start_z + output_z]
        y = one_hot(y, num_classes)  # keras.utils.to_categorical in the course: (x, y, z, num_classes) float32
        bgrd_ratio = np.sum(y[:, :, :, 0]) / (output_x * output_y * output_z)
        tries += 1
        if bgrd_ratio <= background_threshold:
            X = np.copy(image[start_x: start_x + output_x, start_y: start_y + output_y, start_z: start_z + output_z, :])
            X = np.moveaxis(X, 3, 0)
            y = np.moveaxis(y, 3, 0)[1:, :, :, :]
            return X, y, tries
    return None, None, tries  # the course returns None silently


def per_patch(fn, n):
    "Seconds per call of `fn`, over `n` calls, and the results"
    start = time.perf_counter()
    out = [fn() for _ in range(n)]
    return (time.perf_counter() - start) / n, out


def regime(name, image, label, threshold, n_rejection):
    fg = window_sums(summed_volume_table(label), SIZE)
    share = float((1 - fg / np.prod(SIZE) <= threshold + 1e-12).mean())
    np.random.seed(0)
    t_course, results = per_patch(lambda: course_get_sub_volume(image, label, background_threshold=threshold), n_rejection)
    tries = np.mean([r[2] for r in results])
    np.random.seed(0)
    t_ours, _ = per_patch(lambda: get_sub_volume(image, label, background_threshold=threshold), n_rejection)
    start = time.perf_counter()
    patches = sample_patches(image, label, N_EXACT, SIZE, threshold, rng=0)
    t_exact = (time.perf_counter() - start) / N_EXACT
    assert all(1 - y.sum() / np.prod(SIZE) <= threshold + 1e-9 for _, y, _ in patches)
    print(f"{name:<7} threshold {threshold:.4f}, {share:6.2%} of corners valid, rejection {tries:5.1f} tries/patch: "
          f"rejection {t_course * 1e3:7.1f} ms | get_sub_volume {t_ours * 1e3:7.1f} ms | exact {t_exact * 1e3:6.1f} ms "
          f"per patch -> exact is {t_course / t_exact:5.1f}x faster than rejection")
    return t_course / t_exact


def main():
    case = make_phantom(0)  # full size 240 x 240 x 155
    image, label = case.image, case.label
    start = time.perf_counter()
    for _ in range(3): summed_volume_table(label)
    t_table = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    for _ in range(5): np.ascontiguousarray(np.moveaxis(image[:160, :160, :16], -1, 0))
    t_copy = (time.perf_counter() - start) / 5
    print(f"summed-volume table of a 240x240x155 label: {t_table * 1e3:.0f} ms; copying one 160x160x16x4 patch: "
          f"{t_copy * 1e3:.1f} ms; exact sampler spreads the table over {N_EXACT} patches")

    common = regime("common", image, label, BACKGROUND_THRESHOLD, n_rejection=20)
    fg = window_sums(summed_volume_table(label), SIZE)
    rare_threshold = float(np.quantile(1 - fg / np.prod(SIZE), 0.01))  # about 1 % of corners meet it
    rare = regime("rare", image, label, rare_threshold, n_rejection=5)

    small = np.where(label == 3, 3, 0).astype(np.uint8)  # enhancing tumour only: too small for any 160x160x16 patch
    start = time.perf_counter()
    try: sample_patches(image, small, N_EXACT, SIZE, BACKGROUND_THRESHOLD, rng=0); raise AssertionError("a patch qualified")
    except SamplingError as e: message = str(e)
    t_exact_error = time.perf_counter() - start
    np.random.seed(0)
    start = time.perf_counter()
    X, _, tries = course_get_sub_volume(image, small)
    t_course_none = time.perf_counter() - start
    assert X is None and tries == 1000
    np.random.seed(0)
    start = time.perf_counter()
    try: get_sub_volume(image, small)
    except SamplingError: pass
    t_ours_none = time.perf_counter() - start
    none = t_course_none / t_exact_error
    print(f"none    {int((small > 0).sum())} tumour voxels: rejection gives up after 1000 tries in {t_course_none:.2f} s "
          f"(returns None) | get_sub_volume raises in {t_ours_none:.2f} s | exact raises in {t_exact_error * 1e3:.0f} ms "
          f"-> {none:.0f}x sooner\n        exact's error: {message}")
    print(f"targets: common >= 1x: {common:.1f}x {'met' if common >= 1 else 'MISSED'}; rare >= 10x: {rare:.1f}x "
          f"{'met' if rare >= 10 else 'MISSED'}; none >= 10x: {none:.0f}x {'met' if none >= 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
