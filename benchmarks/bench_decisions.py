"""From probabilities to decisions on real patients, with the shipped model (needs ../shared/data/brats2018).

On the shipped model's validation cases (recipes/brats2018/split.json), each case predicted whole:
1. Thresholds. Mean Dice of each BraTS region at the course's 0.5 and at one threshold per class chosen for the
   best Dice on the *other* validation cases (leave one case out), so the gain is not fitted to the case it is
   scored on.
2. Calibration. Expected calibration error per class over the brain, before and after temperature scaling
   fitted on the other cases.
3. Test-time augmentation. The eight mirrorings through the same window plan against one plain prediction:
   the change in mean Dice at 0.5, and what it costs (time ratio, measured side by side per case).
4. Uncertainty. The standard deviation between the mirrorings as a detector of wrong voxels in the brain: the
   area under its ROC curve (0.5: no better than chance), and the error rate among the most uncertain 1 % of
   brain voxels against the error rate overall.
"""
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "brats2018"


def main():
    if not SHARED.is_dir():
        print(f"skipped: no real cases at {SHARED}")
        return
    from bts_course.data import CLASS_NAMES, read_case
    from bts_course.dataset import read_split, split_lists
    from bts_course.decisions import (apply_temperature, choose_thresholds, error_detection_auc, expected_calibration_error,
                                      fit_temperature, leave_one_case_out)
    from bts_course.inference import predict_volume
    from bts_course.labels import THRESHOLD, probabilities_to_labels
    from bts_course.pretrained import load_pretrained
    from bts_course.preprocess import brain_mask
    from bts_course.scores import BRATS_REGIONS, mean_region_dice
    model = load_pretrained()
    names = split_lists(read_split(REPO / "recipes" / "brats2018" / "split.json"))["valid"]
    plain, tta, stds, seconds = [], [], [], []
    for name in names:
        case = read_case(SHARED / name)
        predict_volume(model, case.image, progress=False)                           # warm: plan and trace once
        start = time.perf_counter(); p = predict_volume(model, case.image, progress=False); t_plain = time.perf_counter() - start
        start = time.perf_counter(); m, s = predict_volume(model, case.image, flips="all", return_std=True, progress=False)
        t_tta = time.perf_counter() - start
        brain = brain_mask(case.image)
        plain.append((p, case.label, brain)); tta.append((m, case.label, brain)); stds.append(s); seconds.append((t_plain, t_tta))
        print(f"{name}: plain {t_plain:.1f} s, eight mirrorings {t_tta:.1f} s ({t_tta / t_plain:.1f}x)", flush=True)

    def dice(cases, thresholds_of):
        "Mean Dice per region, case k labelled with thresholds_of(k)"
        return mean_region_dice([probabilities_to_labels(p, thresholds_of(k)) for k, (p, _, _) in enumerate(cases)],
                                [labels for _, labels, _ in cases])

    held_out = leave_one_case_out(plain, lambda others: choose_thresholds(others)[0], lambda case, chosen: chosen)
    at_half, at_chosen = dice(plain, lambda k: THRESHOLD), dice(plain, lambda k: held_out[k])
    print(f"\n--- thresholds ({len(plain)} validation cases, each scored with thresholds chosen on the other {len(plain) - 1})")
    for r in BRATS_REGIONS:
        print(f"{r:16s} Dice at 0.5 {at_half[r]:.4f}, at the held-out thresholds {at_chosen[r]:.4f} ({at_chosen[r] - at_half[r]:+.4f})")

    print("\n--- calibration (expected calibration error over the brain, temperatures fitted on the other cases)")
    for c, cls in enumerate(CLASS_NAMES):
        def fit(others, c=c):
            return fit_temperature(np.concatenate([q[..., c][b] for q, _, b in others]),
                                   np.concatenate([(lab == c + 1)[b] for _, lab, b in others]))
        def score(case, t, c=c):
            p, labels, brain = case
            return (t, expected_calibration_error(p[..., c], labels == c + 1, mask=brain),
                    expected_calibration_error(apply_temperature(p[..., c], t), labels == c + 1, mask=brain))
        temps, before, after = zip(*leave_one_case_out(plain, fit, score), strict=True)
        print(f"{cls:20s} temperature {np.mean(temps):.2f}; ECE {np.mean(before):.4f} -> {np.mean(after):.4f} "
              f"({np.mean(after) / np.mean(before):.2f}x)")

    with_tta = dice(tta, lambda k: THRESHOLD)
    ratio = np.mean([t / p for p, t in seconds])
    print(f"\n--- test-time augmentation (eight mirrorings, the same window plan): {ratio:.1f}x the time of one prediction")
    for r in BRATS_REGIONS: print(f"{r:16s} Dice at 0.5: plain {at_half[r]:.4f}, mirrored {with_tta[r]:.4f} ({with_tta[r] - at_half[r]:+.4f})")

    print("\n--- uncertainty: the std between mirrorings as a detector of wrong voxels (brain only)")
    for (m, labels, brain), s, name in zip(tta, stds, names, strict=True):
        wrong = probabilities_to_labels(m) != labels
        u = s.max(-1)
        top = u[brain] >= np.quantile(u[brain], 0.99)
        print(f"{name}: AUC {error_detection_auc(u, wrong, mask=brain):.3f}; error rate {wrong[brain].mean():.4f} overall, "
              f"{wrong[brain][top].mean():.4f} in the most uncertain 1 % ({wrong[brain][top].mean() / wrong[brain].mean():.0f}x)")


if __name__ == "__main__":
    main()
