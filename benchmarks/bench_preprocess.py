"""Standardisation and the patch data set.

Run: `.venv/bin/python benchmarks/run.py preprocess`

- `standardize` (all slices at once, float32 out) against the course's loop over channels and slices
  (float64 out) on a real (4, 160, 160, 16) MSD patch: the largest difference from a float64 loop and both
  times. The loop over 64 slices is already fast; the point is clarity, dtype and the constant-slice rule.
- `build_patch_dataset` throughput in cases per minute on full-size 240x240x155 phantom cases (MSD layout,
  gzipped NIfTI, 4 patches of 160x160x16 per case): one worker (the course's sequential preprocessing)
  against two worker processes.
"""
import shutil, tempfile, time
from pathlib import Path

import numpy as np

from bts_course.data import example_patches, save_nifti
from bts_course.phantom import make_phantom
from bts_course.dataset import build_patch_dataset
from bts_course.preprocess import standardize

N_CASES = 4


def loop_standardize(image):
    "The course's loop with the constant-slice rule fixed: float64 out"
    out = np.zeros(image.shape)
    for c in range(image.shape[0]):
        for z in range(image.shape[3]):
            s = image[c, :, :, z]
            centered = s - np.mean(s)
            std = np.std(centered)
            if std != 0: out[c, :, :, z] = centered / std
    return out


def best_time(fn, number=10, repeat=5):
    "Best mean seconds per call over `repeat` rounds of `number` calls"
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number): fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def bench_standardize():
    x = example_patches()[0].x
    ours, loop = standardize(x), loop_standardize(x.astype(np.float64))
    diff = float(np.abs(ours - loop).max())
    t_ours, t_loop = best_time(lambda: standardize(x)), best_time(lambda: loop_standardize(x))
    print(f"standardize on {x.shape}: vectorised {t_ours * 1e3:.1f} ms ({ours.dtype}) | loop {t_loop * 1e3:.1f} ms "
          f"({loop.dtype}) -> {t_loop / t_ours:.2f}x; max |difference| from the float64 loop {diff:.1e} "
          f"({'within' if diff < 1e-3 else 'OUTSIDE'} 1e-3)")


def bench_build():
    root = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        start = time.perf_counter()
        src = root / "Task01_BrainTumour"
        first = {}
        for i in range(N_CASES):
            seed = i % 2  # two distinct phantoms, copied, keep the setup short
            image_file, label_file = src / "imagesTr" / f"BRATS_{i:03d}.nii.gz", src / "labelsTr" / f"BRATS_{i:03d}.nii.gz"
            if seed in first:
                shutil.copy(first[seed][0], image_file); shutil.copy(first[seed][1], label_file)
            else:
                case = make_phantom(seed)
                first[seed] = (save_nifti(case.image, image_file, case.affine), save_nifti(case.label, label_file, case.affine))
        print(f"set-up: {N_CASES} full-size cases written in {time.perf_counter() - start:.0f} s")
        rates = {}
        for workers in (1, 2):
            start = time.perf_counter()
            build_patch_dataset(src, root / f"out{workers}", patches_per_case=4, seed=0, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            rates[workers] = N_CASES / seconds * 60
            print(f"build_patch_dataset, {workers} worker(s): {N_CASES} cases in {seconds:.1f} s = "
                  f"{rates[workers]:.1f} cases per minute")
        same = sorted(p.name for p in (root / "out1").glob("*.h5")) == sorted(p.name for p in (root / "out2").glob("*.h5"))
        print(f"2 workers vs 1: {rates[2] / rates[1]:.2f}x the throughput; identical patch files: {same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    bench_standardize()
    bench_build()


if __name__ == "__main__":
    main()
