"""Feature tables and PNGs of ``crdask crmasks`` (layer 4).

Feature tables (numina's names and columns): the 8-connected groups of the
``MEDIANCR`` mask, numbered in raster order of their first pixel, one row
per pixel ``CR_number, X_pixel, Y_pixel, Mask_value`` (FITS pixels, numina's
codes 1 dilation, 2 M.M., 3 auxiliary method, 4 both), split by category:
``any4`` (the group has a pixel found by both), ``only3`` (auxiliary method
only), ``only2`` (diagram only), ``other``.

PNGs: ``diagnostic_histogram2d.png`` (simulated and observed diagrams with
the boundary), ``diagnostic_mediancr.png`` (observed diagram, flagged pixels
on top) and ``mediancr_identified.png`` (cut-outs of up to 16 features in
the median, before and after). They are drawn as binned images, never as
per-pixel scatter plots, so they cost well under a second.

Example
-------
>>> import numpy as np
>>> m = np.zeros((4, 4), bool); m[1, 1] = m[1, 2] = True
>>> f = np.zeros((4, 4), np.int8); f[1, 1] = 4; f[1, 2] = 2
>>> rows = feature_rows(m, f)
>>> rows["any4"]
[(1, 2, 2, 4), (1, 3, 2, 2)]
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_open
from ..kernels.mm_stack import hist2d_add, label8

__all__ = ["feature_rows", "write_feature_tables", "write_plots", "CATEGORIES"]

CATEGORIES = ("any4", "only3", "only2", "other")


def feature_rows(mask, flags):
    """Rows ``(CR_number, X_pixel, Y_pixel, Mask_value)`` per category."""
    lab, n = label8(np.ascontiguousarray(np.asarray(mask, bool)))
    rows = {c: [] for c in CATEGORIES}
    if n == 0:
        return rows
    jj, ii = np.nonzero(lab)
    labels = lab[jj, ii]
    order = np.lexsort((ii, jj, labels))
    jj, ii, labels = jj[order], ii[order], labels[order]
    vals = np.asarray(flags)[jj, ii].astype(int)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    for s, e in zip(starts, ends):
        v = set(vals[s:e].tolist())
        if 4 in v:
            cat = "any4"
        elif 3 in v and 2 not in v:
            cat = "only3"
        elif 2 in v and 3 not in v:
            cat = "only2"
        else:
            cat = "other"
        rows[cat].extend((int(labels[k]), int(ii[k]) + 1, int(jj[k]) + 1, int(vals[k]))
                         for k in range(s, e))
    return rows


def _first_pixels(lab, k):
    # centre (row, col) of groups 1..k
    jj, ii = np.nonzero((lab > 0) & (lab <= k))
    labs = lab[jj, ii]
    out = []
    for q in range(1, k + 1):
        sel = labs == q
        out.append((int(jj[sel].mean() + 0.5), int(ii[sel].mean() + 0.5)))
    return out


def write_feature_tables(result, out, *, overwrite=True):
    """``mediancr_identified_<category>.csv`` for the four categories."""
    rows = feature_rows(result.masks["MEDIANCR"], result.flags)
    paths = []
    for cat in CATEGORIES:
        path = Path(out) / f"mediancr_identified_{cat}.csv"
        text = "CR_number,X_pixel,Y_pixel,Mask_value\n" + "".join(
            f"{a},{b},{c},{d}\n" for a, b, c, d in rows[cat])
        with atomic_open(path, overwrite=overwrite) as f:
            f.write(text.encode())
        paths.append(path)
    return paths


def _save(fig, path, overwrite):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    with atomic_open(path, overwrite=overwrite) as f:
        f.write(buf.getvalue())


def write_plots(result, out, *, overwrite=True):
    """The three PNGs (needs matplotlib, the ``plot`` extra); returns their
    paths (none without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure
    except ImportError:
        return []
    out = Path(out)
    paths = []
    st = result.stats
    x = np.asarray(st["min2d"]).ravel()
    y = (np.asarray(st["median2d"]) - np.asarray(st["min2d"])).ravel()
    dg = result.diagram
    if dg is not None:
        bx, by = dg["bins_x"], dg["bins_y"]
    else:
        bx = np.linspace(x.min(), x.max(), 101)
        by = np.linspace(0, max(float(y.max()), 1.0), 101)
    obs = np.zeros((len(by) - 1, len(bx) - 1), np.int64)
    hist2d_add(obs, y.astype(np.float64), x.astype(np.float64), np.ones(x.size, bool), by, bx)
    ext = [bx[0], bx[-1], by[0], by[-1]]
    xc = (bx[:-1] + bx[1:]) / 2

    fig = Figure(figsize=(11, 4.6))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, h, title in ((axes[0], dg["hist"] if dg is not None else None, "simulated"),
                         (axes[1], obs, "observed")):
        if h is not None and np.any(h > 0):
            ax.imshow(np.where(h > 0, h, np.nan), origin="lower", extent=ext, aspect="auto",
                      norm=LogNorm(), cmap="viridis", interpolation="nearest")
        if result.boundary is not None:
            ax.plot(xc, result.boundary(xc), "r-", lw=1, label="boundary")
        if dg is not None and title == "simulated":
            ax.plot(dg["xb"], dg["yb"], "r+", ms=4, label="boundary points")
        ax.set_xlim(bx[0], bx[-1])
        ax.set_ylim(by[0], by[-1])
        ax.set_title(f"{title} M.M. diagram")
        ax.set_xlabel("min2d [ADU]")
    axes[0].set_ylabel("median2d - min2d [ADU]")
    axes[0].legend(loc="upper left", fontsize=8)
    # fixed margins: tight_layout measures every tick label (a second per run)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.08)
    path = out / "diagnostic_histogram2d.png"
    _save(fig, path, overwrite)
    paths.append(path)

    mask = np.asarray(result.masks["MEDIANCR"]).ravel()
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    if np.any(obs > 0):
        ax.imshow(np.where(obs > 0, obs, np.nan), origin="lower", extent=ext, aspect="auto",
                  norm=LogNorm(), cmap="Greys", interpolation="nearest")
    ax.plot(x[mask], y[mask], "r.", ms=2, label=f"MEDIANCR ({int(mask.sum())} px)")
    if result.boundary is not None:
        ax.plot(xc, result.boundary(xc), "b-", lw=1, label="boundary")
    if result.threshold > 0:
        ax.axhline(result.threshold, color="g", ls=":", label="mm_threshold")
    ax.set_xlim(bx[0], bx[-1])
    ax.set_ylim(by[0], by[-1])
    ax.set_xlabel("min2d [ADU]")
    ax.set_ylabel("median2d - min2d [ADU]")
    ax.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.96)
    path = out / "diagnostic_mediancr.png"
    _save(fig, path, overwrite)
    paths.append(path)

    # Features: one mosaic image (median before | after, 15x15 px each,
    # each cut-out scaled on its own), drawn with a single imshow.
    med = np.asarray(st["median2d"])
    corr = np.asarray(result.combination("mediancr")[0])
    lab, n = label8(np.ascontiguousarray(np.asarray(result.masks["MEDIANCR"])))
    k = min(n, 16)
    side, gap, ncol = 15, 3, 4
    rows = max((k + ncol - 1) // ncol, 1)
    mosaic = np.full((rows * (side + gap), ncol * (2 * side + 2 * gap)), np.nan)
    if k:
        objs = _first_pixels(lab, k)
        for q, (jc, ic) in enumerate(objs):
            j0 = min(max(jc - side // 2, 0), max(med.shape[0] - side, 0))
            i0 = min(max(ic - side // 2, 0), max(med.shape[1] - side, 0))
            sl = (slice(j0, j0 + side), slice(i0, i0 + side))
            lo, hi = np.percentile(corr[sl], [2, 98])
            hi = max(hi, lo + 1e-6)
            r, c = divmod(q, ncol)
            for half, img in enumerate((med, corr)):
                cut = np.clip((img[sl] - lo) / (hi - lo), 0, 1)
                y0 = r * (side + gap)
                x0 = c * (2 * side + 2 * gap) + half * (side + 1)
                mosaic[y0:y0 + cut.shape[0], x0:x0 + cut.shape[1]] = cut
    fig = Figure(figsize=(8, 0.55 * rows * 2 + 0.6))
    ax = fig.subplots()
    ax.imshow(mosaic, origin="lower", cmap="gray", interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"MEDIANCR features 1-{k} of {n} (median | cleaned median); "
                 "positions in mediancr_identified_*.csv", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88)
    path = out / "mediancr_identified.png"
    _save(fig, path, overwrite)
    paths.append(path)
    return paths
