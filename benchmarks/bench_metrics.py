"""HD95: distance transforms on surfaces inside the tumour's box (ours) vs brute-force pairwise distances and a k-d tree.

Full 240×240×155 phantom: ours vs a k-d tree over the surface voxels (same pooled percentile).
Smaller 96×96×64 phantom: ours vs brute force (`cdist` of every surface pair, in chunks), the
O(n²) method a straightforward implementation uses. Scattered false positives on the full volume:
method="auto" (k-d tree there) vs the distance transform forced on the whole box. Every pair of
methods must agree to 1e-9 mm.

The whole region table against the official BraTS evaluation (`brats-evaluation` / panoptica, its
`gli` configuration, global Dice and HD95) on the full case, when an interpreter with that package is
given in BRATS_EVALUATION_PYTHON (or it is importable here): both timed on the same arrays, the
official one inside its own process after its imports, and their numbers must agree.
"""
import importlib.util, json, os, subprocess, sys, tempfile
import time
import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from bts_course.phantom import make_phantom
from bts_course.scores import BRATS_REGIONS, brats_region_metrics, hd95, surface

def _timed(fn, *args, repeat=3):
    "Best wall time of `repeat` calls, and the last result"
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter(); out = fn(*args); best = min(best, time.perf_counter() - start)
    return best, out

def _points(mask, spacing):
    return np.argwhere(surface(mask)) * np.asarray(spacing, float)

def hd95_kdtree(pred, truth, spacing):
    "Pooled HD95 from nearest-neighbour queries in k-d trees of the two surfaces (found on the whole volume, no box)"
    sp, st = _points(pred, spacing), _points(truth, spacing)
    return float(np.percentile(np.concatenate([cKDTree(st).query(sp)[0], cKDTree(sp).query(st)[0]]), 95))

def hd95_brute(pred, truth, spacing, chunk=2048):
    "Pooled HD95 from every pairwise distance between the two surfaces (row chunks keep memory bounded)"
    sp, st = _points(pred, spacing), _points(truth, spacing)
    to_t = np.concatenate([cdist(sp[i:i + chunk], st).min(axis=1) for i in range(0, len(sp), chunk)])
    to_p = np.concatenate([cdist(st[i:i + chunk], sp).min(axis=1) for i in range(0, len(st), chunk)])
    return float(np.percentile(np.concatenate([to_t, to_p]), 95))

def _prediction(label):
    "A plausible imperfect prediction: the truth shifted by a few voxels, edema grown by one voxel"
    from scipy import ndimage
    pred = np.roll(label, (2, -1, 1), axis=(0, 1, 2))
    grown = ndimage.binary_dilation(pred > 0) & (pred == 0)
    pred[grown] = 1
    return pred

def _compare(title, truth, pred, spacing, reference, ref_name, repeat):
    print(f"{title}: shape {truth.shape}, spacing {spacing}")
    total_ours = total_ref = 0.0
    for name, codes in BRATS_REGIONS.items():
        p, t = np.isin(pred, codes), np.isin(truth, codes)
        n_surf = int(surface(p).sum() + surface(t).sum())
        t_ours, ours = _timed(hd95, p, t, spacing, repeat=repeat)
        t_ref, ref = _timed(reference, p, t, spacing, repeat=1)
        assert abs(ours - ref) < 1e-9, (name, ours, ref)
        total_ours += t_ours; total_ref += t_ref
        print(f"  {name:17s} {n_surf:7,d} surface voxels  HD95 {ours:6.3f} mm   ours {t_ours * 1e3:8.1f} ms   "
              f"{ref_name} {t_ref * 1e3:9.1f} ms   ratio {t_ref / t_ours:7.1f}x")
    print(f"  all three regions: ours {total_ours:.3f} s, {ref_name} {total_ref:.3f} s, ratio {total_ref / total_ours:.1f}x")

def main():
    spacing = (1.0, 1.0, 1.0)
    full = make_phantom(seed=0)
    pred = _prediction(full.label)
    _compare("full case vs k-d tree", full.label, pred, spacing, hd95_kdtree, "k-d tree", repeat=3)
    t_table, table = _timed(brats_region_metrics, pred, full.label, spacing)
    print(f"whole region table (Dice, sensitivity, specificity, HD95) on the full case: {t_table:.3f} s")
    print(table.round(4).to_string())

    small = make_phantom(seed=1, shape=(96, 96, 64))
    _compare("smaller case vs brute force", small.label, _prediction(small.label), (1.0, 1.0, 1.5),
             hd95_brute, "brute force", repeat=3)

    # worst cases for the box: scattered voxels over the whole volume (a poorly trained model), where
    # method="auto" switches to the k-d tree; compared with the distance transform forced on the big box
    rng = np.random.default_rng(0)
    tumour = np.isin(full.label, (1, 2, 3))
    stray = np.isin(pred, (1, 2, 3)); stray[tuple(rng.integers(20, 220, (3, 300)) % np.array(tumour.shape)[:, None])] = True
    speckle = (rng.random(tumour.shape) > 0.999, rng.random(tumour.shape) > 0.999)
    for title, (a, b) in {"shifted tumour + 300 stray voxels": (stray, tumour), "speckle over the whole volume": speckle}.items():
        t_auto, ours = _timed(hd95, a, b, spacing, repeat=1)
        t_edt, edt = _timed(lambda *args: hd95(*args, method="edt"), a, b, spacing, repeat=1)
        assert abs(ours - edt) < 1e-9
        print(f"{title}: HD95 {ours:.3f} mm   ours (auto) {t_auto:.2f} s   distance transform on the box {t_edt:.2f} s   "
              f"ratio {t_edt / t_auto:.1f}x")

OFFICIAL_TIMING = """
import json, sys, time, numpy as np
from brats_evaluation import config_path
from panoptica import Panoptica_Evaluator
pred, ref = np.load(sys.argv[1]), np.load(sys.argv[2])
evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
best, out = float("inf"), None
for _ in range(int(sys.argv[3])):
    start = time.perf_counter(); out = evaluator.evaluate(pred, ref, verbose=False); best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best, **{f"{g} {m}": float(getattr(r, f"global_bin_{m}")) for g, r in out.items() for m in ("dsc", "hd95")}}))
"""

def compare_official(repeat=2):
    "Our region table vs the official package's evaluation of the same pair (2023 codes), on the full phantom"
    python = os.environ.get("BRATS_EVALUATION_PYTHON") or (sys.executable if importlib.util.find_spec("brats_evaluation") else None)
    if python is None:
        print("official BraTS evaluation: not installed (set BRATS_EVALUATION_PYTHON to an interpreter with brats-evaluation)")
        return
    full = make_phantom(seed=0)
    pred = _prediction(full.label)
    to_2023 = np.array([0, 2, 1, 3], np.uint8)   # course codes -> BraTS 2023 codes (edema 2, core 1, enhancing 3)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/pred.npy", to_2023[pred]); np.save(f"{tmp}/ref.npy", to_2023[full.label])
        done = subprocess.run([python, "-c", OFFICIAL_TIMING, f"{tmp}/pred.npy", f"{tmp}/ref.npy", str(repeat)],
                              capture_output=True, text=True, check=True)
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    t_ours, ours = _timed(brats_region_metrics, pred, full.label, (1.0, 1.0, 1.0), repeat=repeat)
    for region, group in {"Whole tumor": "wt", "Tumor core": "tc", "Enhancing tumor": "et"}.items():
        assert abs(ours.loc[region, "Dice"] - theirs[f"{group} dsc"]) < 1e-12, region
        hd = theirs[f"{group} hd95"]
        assert abs(ours.loc[region, "HD95"] - (373.0 if hd == float("inf") else hd)) < 1e-9, region
    print(f"full case vs the official BraTS evaluation (all its groups and lesion-wise matching included): "
          f"ours {t_ours:.2f} s, official {theirs['seconds']:.2f} s, ratio {theirs['seconds'] / t_ours:.1f}x; "
          "Dice and HD95 of WT, TC, ET equal")

if __name__ == "__main__":
    main()
    compare_official()
