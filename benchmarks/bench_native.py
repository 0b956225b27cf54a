"""Your own scans, timed: from DICOM folders to the report for one real BraTS case, step by step, on this machine.

One whole BraTS 2018 case from `../shared` (default Brats18_TCIA02_370_1, a validation case of the shipped model) is
turned into what a scanner exports: each sequence but T1gd moved by a rigid motion (up to 15 degrees and 20 mm) and
acquired on a grid of its own -- FLAIR 0.5x0.5x5 mm axial, T1w 1 mm in RAS order, T2w 0.8x0.8x2 mm oblique -- and all
four written as DICOM series (one file per slice). That preparation is not timed. Then the road a user takes, each step
timed: reading the four DICOM folders (slice checks included), registration (three sequences), resampling onto the
model's 1 mm grid, prediction with the shipped model, mapping the labels back onto every sequence's grid, and writing
the report (PNG, HTML, JSON, NIfTI labels). Target: under two minutes a case on two CPU cores.

The method it replaces is none -- the package could not read such a case before -- so the reference printed beside it
is predicting the original BraTS case directly (`read_case` + `predict_case`): the ratio says what the road from the
scanner costs on top of the prediction itself. Also printed: the registration error of each sequence against the known
motion (mean displacement of brain voxels, mm; rotation, degrees) and the whole-tumour Dice of both predictions.

Run: `.venv/bin/python benchmarks/run.py native` or `.venv/bin/python benchmarks/bench_native.py [CASE]`.
"""
import math, sys, tempfile, time
from pathlib import Path

import numpy as np

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2018"


def main(case: str = "Brats18_TCIA02_370_1"):
    import SimpleITK as sitk
    from bts_course import native as nv
    from bts_course.data import read_case
    from bts_course.evaluation import predict_case
    from bts_course.pretrained import load_for_prediction
    if not (BRATS / case).is_dir():
        print(f"skipped: {BRATS / case} is not on this machine (../shared)")
        return
    model, card = load_for_prediction()
    kwargs = dict(progress=False, intensity_normalization=card["intensity_normalization"])
    predict_case(model, read_case(BRATS / case), card["threshold"], **kwargs)   # warm-up: TensorFlow's first call

    rng = np.random.default_rng(0)
    originals = nv.read_sequences(BRATS / case)
    centre = nv.image_centre(originals["T1gd"])
    grids = {"FLAIR": ((0.5, 0.5, 5.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), "T1w": ((1.0, 1.0, 1.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
             "T2w": ((0.8, 0.8, 2.0), tuple(nv.rigid_transform((10, 0, 15)).GetMatrix()))}
    motions = {m: nv.rigid_transform(rng.uniform(-15, 15, 3), rng.uniform(-20, 20, 3), centre) for m in grids}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {}
        for m, image in {"T1gd": originals["T1gd"], **{m: nv.simulate_acquisition(originals[m], motions[m], *grids[m])
                                                      for m in grids}}.items():
            folders[m] = tmp / m.lower()
            nv.write_dicom_series(image, folders[m], f"{m} (bench)")
        steps, start = {}, time.perf_counter()
        t = time.perf_counter()
        prepared = nv.prepare_case(folders, name=case, progress=False)
        total_prepare = time.perf_counter() - t
        steps.update(prepared.seconds)
        steps["checks"] = total_prepare - sum(prepared.seconds.values())    # skull, overlap, model grid, alignment checks
        result = nv.predict_native(model, prepared, card, all_grids=True, **kwargs)
        steps["prediction"], steps["mapping back"] = result.seconds["prediction"], result.seconds["mapping back"]
        t = time.perf_counter()
        nv.write_report(tmp / "report", prepared, result)
        steps["report"] = time.perf_counter() - t
        total = time.perf_counter() - start

        t = time.perf_counter()
        bts = read_case(BRATS / case)
        direct, _, _ = predict_case(model, bts, card["threshold"], **kwargs)
        reference = time.perf_counter() - t

        truth_native = sitk.Resample(nv.from_array(bts.label, originals["T1gd"]), prepared.sequences["T1gd"], sitk.Transform(),
                                     sitk.sitkNearestNeighbor, 0.0)
        dice = lambda a, b: 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)
        native_dice = dice(sitk.GetArrayFromImage(result.native["T1gd"]) > 0, sitk.GetArrayFromImage(truth_native) > 0)
        direct_dice = dice(direct > 0, bts.label > 0)
        points = [prepared.grid.TransformContinuousIndexToPhysicalPoint([float(v) for v in i])
                  for i in np.argwhere(prepared.case.image[..., 2] != 0)[::97]]

    print(f"{case}: DICOM folders -> report on {prepared.case.image.shape[:3]} voxels of 1 mm")
    for name, seconds in steps.items(): print(f"  {name:<13} {seconds:6.1f} s")
    print(f"  {'total':<13} {total:6.1f} s   (target < 120 s)")
    print(f"  reference: read_case + predict_case on the BraTS files {reference:.1f} s; native road / reference = {total / reference:.1f}x")
    for m in grids:
        found = prepared.registrations[m].transform
        mm = np.mean([np.linalg.norm(np.subtract(found.TransformPoint(p), motions[m].TransformPoint(p))) for p in points])
        r = np.array(found.GetMatrix()).reshape(3, 3) @ np.array(motions[m].GetMatrix()).reshape(3, 3).T
        deg = math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
        check = prepared.alignment[m]
        print(f"  {m:<5} {str(grids[m][0]):<16} error {mm:.2f} mm {deg:.2f} deg; NMI {check['nmi']:.4f} "
              f"(best 4 mm shift {check['best_shifted_nmi']:.4f}); {'MISALIGNED' if check['misaligned'] else 'aligned'}")
    print(f"  whole-tumour Dice: native road {native_dice:.4f}, BraTS case directly {direct_dice:.4f} "
          f"(difference {direct_dice - native_dice:+.4f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
