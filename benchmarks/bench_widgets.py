"""Redraw time of the slice explorer after a slider change, against redrawing a matplotlib figure.

Ours: `SliceExplorer` renders the three planes with numpy and encodes three PNGs for `ipywidgets.Image`.
Baseline: what an `interact` + `imshow` explorer does on each change — a new figure with the three planes,
grey image + class overlay + crosshair, rendered to PNG by the inline backend (`savefig`). A second, faster
baseline keeps one figure and only updates its images (`set_data`) before rendering it to PNG again.
Both run on the same full-size phantom (240 x 240 x 155) in one run.

With class probabilities (240 x 240 x 155 x 3) and an uncertainty map shown, a slice change should cost about
what it costs on label codes (the labels are made once per threshold); a threshold change relabels the whole
volume, recounts the classes and recomputes the Dice, then redraws: it is timed too, as a multiple of a slice change.
"""
import io
import time

import numpy as np


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from bts_course.phantom import make_phantom
    from bts_course.widgets import SliceExplorer
    from bts_course.viz import plane_slice, voxel_to_pixel

    case = make_phantom(0)
    prediction = np.roll(case.label, 3, axis=0)
    ex = SliceExplorer(case, prediction=prediction)
    x0, y0, z0 = ex.position
    probs = np.stack([prediction == code for code in (1, 2, 3)], axis=-1).astype(np.float32)
    for axis in range(3):  # soft borders, so that every threshold moves some of them
        probs = (np.roll(probs, 1, axis) + probs + np.roll(probs, -1, axis)) / 3
    ex_p = SliceExplorer(case, prediction=probs, uncertainty=(probs * (1 - probs)).max(-1), position=ex.position)
    slices = [int(z) for z in np.linspace(20, 135, 30)]

    def ours(z):
        ex.sliders["axial"].value = z  # the observer redraws: 3 planes rendered + 3 PNGs encoded

    lo, hi = ex.window.value
    colours = ListedColormap([(0, 0, 0, 0), (1, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1)])
    flair = case.image[..., 0]

    def planes(z):
        pos = (x0, y0, z)
        return [(p, pos[{"axial": 2, "coronal": 1, "sagittal": 0}[p]], pos) for p in ("axial", "coronal", "sagittal")]

    def matplotlib_new_figure(z):
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2), dpi=80)
        for ax, (p, i, pos) in zip(axes, planes(z), strict=True):
            ax.imshow(plane_slice(flair, p, i), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.imshow(plane_slice(case.label, p, i), cmap=colours, vmin=0, vmax=3, alpha=0.5, interpolation="nearest")
            r, c = voxel_to_pixel(p, pos, case.label.shape)
            ax.axhline(r, color="orange", lw=0.8)
            ax.axvline(c, color="orange", lw=0.8)
            ax.set_axis_off()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2), dpi=80)
    artists = []
    for ax, (p, i, pos) in zip(axes, planes(z0), strict=True):
        grey = ax.imshow(plane_slice(flair, p, i), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        over = ax.imshow(plane_slice(case.label, p, i), cmap=colours, vmin=0, vmax=3, alpha=0.5, interpolation="nearest")
        r, c = voxel_to_pixel(p, pos, case.label.shape)
        artists.append((grey, over, ax.axhline(r, color="orange", lw=0.8), ax.axvline(c, color="orange", lw=0.8)))
        ax.set_axis_off()

    def matplotlib_set_data(z):
        for (grey, over, hline, vline), (p, i, pos) in zip(artists, planes(z), strict=True):
            grey.set_data(plane_slice(flair, p, i))
            over.set_data(plane_slice(case.label, p, i))
            r, c = voxel_to_pixel(p, pos, case.label.shape)
            hline.set_ydata([r, r])
            vline.set_xdata([c, c])
        buf = io.BytesIO()
        fig.savefig(buf, format="png")

    def on_probabilities(z):
        ex_p.sliders["axial"].value = z  # compare mode, uncertainty heat map on

    thresholds = iter(np.tile([0.4, 0.6], len(slices)))

    def threshold_change(z):
        ex_p.thresholds[0].value = float(next(thresholds))  # relabel + counts + Dice, then the same redraw

    # interleaved rounds, so that load from other processes falls on every method alike; each method gets a
    # slice different from the one it showed last, so every call really redraws
    methods = {"truth": (ours, 0), "compare": (ours, 1), "probabilities": (on_probabilities, 2), "threshold": (threshold_change, 0),
               "render": (lambda z: [ex.render_plane(p, z if p == "axial" else None) for p in ex.images], 0),
               "mpl_new": (matplotlib_new_figure, 0), "mpl_reuse": (matplotlib_set_data, 0)}
    times = {m: [] for m in methods}
    for z in slices:
        for m, (fn, offset) in methods.items():
            if m == "mpl_new" and len(times[m]) >= 12: continue  # slow: fewer rounds
            if m in ("truth", "compare"): ex.mode.value = m  # (this redraw is not timed)
            start = time.perf_counter()
            fn(z + offset)
            times[m].append(time.perf_counter() - start)
    plt.close(fig)
    ours_truth, ours_compare, ours_probs, ours_threshold, render_only, mpl_new, mpl_reuse = (
        1000 * float(np.median(times[m])) for m in methods)

    print(f"case {case.image.shape}; median over {len(slices)} axial slider changes (new matplotlib figure: 12)")
    print(f"  ours, truth overlay (render + 3 PNGs):          {ours_truth:7.1f} ms")
    print(f"  ours, compare mode (render + 3 PNGs):           {ours_compare:7.1f} ms")
    print(f"  ours, probabilities + uncertainty (compare):    {ours_probs:7.1f} ms   ratio to truth {ours_probs / ours_truth:5.2f}x")
    print(f"  ours, threshold change (relabel, Dice, redraw): {ours_threshold:7.1f} ms   ratio to truth {ours_threshold / ours_truth:5.1f}x")
    print(f"  ours, rendering the 3 planes only:              {render_only:7.1f} ms")
    print(f"  matplotlib, new figure per redraw (interact):   {mpl_new:7.1f} ms   ratio {mpl_new / ours_truth:5.1f}x")
    print(f"  matplotlib, one figure, set_data + savefig:     {mpl_reuse:7.1f} ms   ratio {mpl_reuse / ours_truth:5.1f}x")
    print(f"  budget 200 ms: a slice change uses {100 * max(ours_truth, ours_compare, ours_probs) / 200:.0f} %, "
          f"a threshold change {100 * ours_threshold / 200:.0f} %")


if __name__ == "__main__":
    main()
