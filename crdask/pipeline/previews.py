"""PNG previews for the run report (needs the ``plot`` extra: matplotlib).

:func:`make_previews` turns the ``previews`` dict the pipeline builds into
small PNG files in ``out_dir/previews/``:

* ``master_<name>.png`` -- one per calibration master, zscale-like stretch
  (:class:`astropy.visualization.ZScaleInterval`), with a colour bar.
* ``frame_<stem>.png`` -- one per science frame: the calibrated frame before
  CR cleaning with the CR mask painted in red, and the cleaned frame beside
  it, on the same grey scale (zscale of the cleaned frame).
* ``cr_counts.png`` -- CR pixels per science frame over the night, in the
  order given (the pipeline's night order).

Decisions:

* Figures are drawn with matplotlib's object API on the Agg canvas
  (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``: no global state, no
  interactive backend is touched, safe in worker threads.
* Large frames are shrunk by an integer factor so each image is at most
  :data:`MAX_PIX` pixels on a side: the image by a block mean, the CR mask by
  a block *maximum* (a block with one CR pixel is shown as CR), so every CR
  stays visible. Each image is drawn at (at least) one screen pixel per
  binned pixel with nearest-neighbour sampling, so no binned row or column
  -- and no CR -- is dropped by the renderer. Unless the image is drawn
  enlarged (>= 3 screen px per pixel), each isolated mask pixel is grown to a
  3x3 dot for display, so a lone single-pixel CR is seen rather than an
  invisible speck; larger CRs are drawn at their (pooled) size.
* Images are drawn in :data:`_GREYS` (64) grey steps and the PNGs are stored
  as 8-bit palette images (Pillow, a matplotlib dependency) in which the CR
  red is always kept: nothing visible is lost, and a noisy 2048x2048 frame
  stays under ~200 KB.
* Every file is written atomically (:func:`crdask.io.atomic.atomic_open`),
  replacing a preview of an earlier run. A preview that cannot be made (not a
  2-D array, nothing finite, ...) is skipped with a logged one-line reason;
  it never stops the report or the other previews.
* Without matplotlib no PNG is made and :func:`make_previews` returns ``[]``;
  :func:`plot_available` tells the report to say so.
"""

import io
import logging
import math
import os
import re
import warnings

import numpy as np

from ..io.atomic import atomic_open

__all__ = ["MAX_PIX", "PLOT_EXTRA_HINT", "PREVIEW_DIR", "plot_available", "make_previews",
           "render"]

log = logging.getLogger(__name__)

#: Largest side, in (binned) pixels, of an image drawn in a preview.
MAX_PIX = 512
#: Sub-directory of ``out_dir`` holding the PNGs.
PREVIEW_DIR = "previews"
#: What the report says when matplotlib is missing.
PLOT_EXTRA_HINT = "previews need the plot extra: pip install crdask[plot]"

_DPI = 100
_GREYS = 64       # grey steps of a preview image
_CR_RGB = (1.0, 0.08, 0.08)   # CR overlay colour: red, visible on any grey
_BAR_RGB = "#c0392b"


def _matplotlib():
    """``(Figure, FigureCanvasAgg)`` or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401  (fails first if matplotlib is absent)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def plot_available():
    """True when matplotlib (the ``plot`` extra) is installed: found, not
    imported (the import takes 0.9 s, which a run's client would otherwise
    spend before its masters; :func:`render` imports it when it draws)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):   # a broken or half-removed install
        return False


# --------------------------------------------------------------------------- arrays

def _as_image(a, what):
    a = np.asarray(a)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{what}: expected a non-empty 2-D image, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{what}: expected a real image, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def _factor(shape, max_pix=MAX_PIX):
    return max(1, math.ceil(max(shape) / max_pix))


def _bin_mean(a, f):
    """Block mean by ``f`` (edge blocks padded by repetition), NaN-aware."""
    if f == 1:
        return a
    ny, nx = a.shape
    py, px = -ny % f, -nx % f
    if py or px:
        a = np.pad(a, ((0, py), (0, px)), mode="edge")
    shape = (a.shape[0] // f, f, a.shape[1] // f, f)
    finite = np.isfinite(a)
    if finite.all():
        return a.reshape(shape).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    s = np.where(finite, a, 0).reshape(shape).sum(axis=(1, 3), dtype=np.float64)
    n = finite.reshape(shape).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (s / n).astype(np.float32)   # all-NaN block -> NaN


def _bin_max(mask, f):
    """Block maximum (any) of a boolean mask by ``f``: CRs survive shrinking."""
    mask = np.asarray(mask, dtype=bool)
    if f == 1:
        return mask
    ny, nx = mask.shape
    mask = np.pad(mask, ((0, -ny % f), (0, -nx % f)))
    return mask.reshape(mask.shape[0] // f, f, mask.shape[1] // f, f).any(axis=(1, 3))


def _neighbours(mask):
    """Pixels with a set 8-neighbour (or set themselves): a 3x3 dilation."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _show_lone(mask):
    """``mask`` with each isolated pixel grown to a 3x3 dot (others unchanged)."""
    padded = np.pad(mask, 1)
    count = sum(padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                .astype(np.uint8) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    lone = mask & (count == 1)
    return mask | _neighbours(lone) if lone.any() else mask


def _zscale(a):
    from astropy.visualization import ZScaleInterval

    finite = a[np.isfinite(a)]
    if finite.size == 0:
        raise ValueError("no finite pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo, hi = ZScaleInterval().get_limits(finite)
    lo, hi = float(lo), float(hi)
    if not hi > lo:   # flat image: centre it in a small range
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def _grey(a, lo, hi):
    """``a`` stretched linearly from ``lo`` (0) to ``hi`` (1) in :data:`_GREYS` steps.

    Few grey steps look the same on screen but keep noisy images small as PNG;
    non-finite pixels are drawn black.
    """
    g = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    g = np.where(np.isfinite(g), g, 0.0)
    return (np.rint(g * (_GREYS - 1)) / (_GREYS - 1)).astype(np.float32)


def _grey_rgb(a, lo, hi):
    return np.repeat(_grey(a, lo, hi)[..., None], 3, axis=2)


# --------------------------------------------------------------------------- files

def _safe(name):
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "unnamed"


class _Namer:
    """Unique file names inside one preview directory."""

    def __init__(self):
        self.used = set()

    def __call__(self, stem):
        name, i = f"{stem}.png", 2
        while name.lower() in self.used:
            name, i = f"{stem}-{i}.png", i + 1
        self.used.add(name.lower())
        return name


def _palette_png(rgb, keep):
    """``rgb`` (h, w, 3 uint8) as an 8-bit palette PNG (bytes).

    With <= 256 distinct colours the conversion is exact. Otherwise the
    palette holds the colours in ``keep`` (the CR overlay: it must survive
    however few pixels it covers) and then the most frequent others; each
    remaining colour (anti-aliased text edges, in practice) is drawn with its
    nearest palette colour.
    """
    from PIL import Image

    h, w, _ = rgb.shape
    key = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) \
        | rgb[..., 2]
    uniq, inverse, counts = np.unique(key.ravel(), return_inverse=True, return_counts=True)
    cols = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.int32)
    if len(uniq) <= 256:
        pal, lut = cols, np.arange(len(uniq))
    else:
        prio = counts.astype(np.float64)
        for c in keep:
            prio[np.all(np.abs(cols - np.asarray(c)) <= 2, axis=1)] = np.inf
        chosen = np.sort(np.argsort(-prio, kind="stable")[:256])
        pal = cols[chosen]
        d = ((cols[:, None, :] - pal[None, :, :]) ** 2).sum(axis=2)
        lut = np.argmin(d, axis=1)
    idx = lut[inverse].astype(np.uint8).reshape(h, w)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(pal.astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)  # optimize=True doubled the report time
    return buf.getvalue()


def _save(fig, canvas_cls, path):
    """Render ``fig`` and write it as a palette PNG, atomically."""
    canvas = canvas_cls(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    data = _palette_png(rgb, keep=[tuple(int(round(255 * v)) for v in _CR_RGB)])
    with atomic_open(path, overwrite=True, mode="wb") as f:
        f.write(data)


def _axes_size(shape):
    """Inches for an image axes showing ``shape`` at >= 1 screen px per pixel."""
    ny, nx = shape
    # Never smaller than the binned image (no dropped rows); small images are
    # enlarged to ~3 inches so they stay legible.
    scale = max(1.0, 300.0 / max(ny, nx))
    return (nx * scale / _DPI + 0.02, ny * scale / _DPI + 0.02)


def _image_axes(fig, left, bottom, w, h, W, H):
    ax = fig.add_axes((left / W, bottom / H, w / W, h / H))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


# --------------------------------------------------------------------------- figures

def _master_png(mpl, path, name, data):
    Figure, Canvas = mpl
    data = _as_image(data, f"master {name}")
    f = _factor(data.shape)
    small = _bin_mean(data, f)
    lo, hi = _zscale(data)
    w, h = _axes_size(small.shape)
    margin_l, margin_r, margin_b, margin_t, cbar = 0.15, 1.1, 0.15, 0.55, 0.15
    W, H = margin_l + w + margin_r, margin_b + h + margin_t
    fig = Figure(figsize=(W, H), dpi=_DPI)
    ax = _image_axes(fig, margin_l, margin_b, w, h, W, H)
    im = ax.imshow(lo + _grey(small, lo, hi) * (hi - lo), cmap="gray", vmin=lo, vmax=hi,
                   origin="lower", interpolation="nearest", aspect="auto")
    cax = fig.add_axes(((margin_l + w + 0.12) / W, margin_b / H, cbar / W, h / H))
    fig.colorbar(im, cax=cax)
    cax.tick_params(labelsize=7)
    ny, nx = data.shape
    finite = data[np.isfinite(data)]
    med = f"median {np.median(finite):.4g}" if finite.size else "no finite pixels"
    fig.text(margin_l / W, 1 - 0.12 / H, f"master {name}", fontsize=10,
             weight="bold", va="top")
    fig.text(margin_l / W, 1 - 0.32 / H,
             f"{nx}x{ny} px, {med}, zscale [{lo:.4g}, {hi:.4g}]"
             + (f", binned {f}x{f}" if f > 1 else ""), fontsize=7, va="top")
    _save(fig, Canvas, path)


def _science_png(mpl, path, name, before, after, crmask):
    Figure, Canvas = mpl
    before = _as_image(before, f"{name} before")
    after = _as_image(after, f"{name} after")
    if crmask is None:
        crmask = np.zeros(before.shape, bool)
    crmask = np.asarray(crmask)
    if not (before.shape == after.shape == crmask.shape):
        raise ValueError(f"{name}: before {before.shape}, after {after.shape} and "
                         f"crmask {crmask.shape} differ in shape")
    f = _factor(before.shape)
    b, a, m = _bin_mean(before, f), _bin_mean(after, f), _bin_max(crmask, f)
    lo, hi = _zscale(after)   # the cleaned frame sets the scale: CRs do not stretch it
    w, h = _axes_size(b.shape)
    if w * _DPI < 3 * b.shape[1]:   # < 3 screen px per image px: make lone CRs visible
        m = _show_lone(m)
    rgb_b = _grey_rgb(b, lo, hi)
    rgb_b[m] = _CR_RGB
    gap, margin, margin_b, margin_t = 0.15, 0.1, 0.1, 0.6
    W, H = 2 * w + gap + 2 * margin, margin_b + h + margin_t
    fig = Figure(figsize=(W, H), dpi=_DPI)
    ax1 = _image_axes(fig, margin, margin_b, w, h, W, H)
    ax2 = _image_axes(fig, margin + w + gap, margin_b, w, h, W, H)
    ax1.imshow(rgb_b, origin="lower", interpolation="nearest", aspect="auto")
    ax2.imshow(_grey_rgb(a, lo, hi), origin="lower", interpolation="nearest",
               aspect="auto")
    n_cr = int(np.count_nonzero(crmask))
    ny, nx = before.shape
    fig.text(margin / W, 1 - 0.1 / H,
             f"{name}  ({nx}x{ny} px" + (f", binned {f}x{f}, CR mask max-pooled" if f > 1
                                         else "") + ")",
             fontsize=9, weight="bold", va="top")
    ax1.set_title(f"before: {n_cr} CR pixels in red", fontsize=8, color="#b00000")
    ax2.set_title("after CR cleaning", fontsize=8)
    _save(fig, Canvas, path)


def _counts_png(mpl, path, counts):
    Figure, Canvas = mpl
    rows = [(str(f), c) for f, c in counts if c is not None]
    values = np.array([float(c) for _, c in rows], dtype=float)
    if values.size == 0:
        raise ValueError("no CR counts")
    n = values.size
    fig = Figure(figsize=(8.0, 3.6 if n <= 40 else 3.0), dpi=_DPI)
    ax = fig.add_subplot()
    x = np.arange(n)
    if n <= 300:
        ax.bar(x, values, width=0.8, color=_BAR_RGB)
    else:   # thousands of frames: one filled step outline is fast and readable
        ax.stairs(values, np.arange(n + 1) - 0.5, fill=True, color=_BAR_RGB)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("CR pixels", fontsize=8)
    ax.set_title(f"CR pixels per science frame ({n} frames, median "
                 f"{np.median(values):.0f})", fontsize=9)
    ax.tick_params(labelsize=7)
    if n <= 40:
        ax.set_xticks(x)
        ax.set_xticklabels([os.path.basename(f) for f, _ in rows], rotation=60,
                           ha="right", fontsize=6)
    else:
        ax.set_xlabel("science frame (night order)", fontsize=8)
    fig.tight_layout()
    _save(fig, Canvas, path)


# --------------------------------------------------------------------------- driver

def render(out_dir, previews):
    """Make the previews; a list of ``{"kind", "name", "path", "error"}`` items.

    ``path`` is the PNG written (``None`` on error); ``error`` is a one-line
    reason (``None`` on success). Returns ``None`` without matplotlib.
    """
    mpl = _matplotlib()
    if mpl is None:
        return None
    if not previews:
        return []
    pdir = os.path.join(os.fspath(out_dir), PREVIEW_DIR)
    os.makedirs(pdir, exist_ok=True)
    name_for = _Namer()
    jobs = []
    for name, data in (previews.get("masters") or {}).items():
        jobs.append(("master", str(name), name_for(f"master_{_safe(name)}"),
                     lambda p, n=str(name), d=data: _master_png(mpl, p, n, d)))
    for sci in previews.get("science") or []:
        stem = str(sci.get("name", "frame"))
        jobs.append(("science", stem, name_for(f"frame_{_safe(stem)}"),
                     lambda p, s=sci, n=stem: _science_png(
                         mpl, p, n, s.get("before"), s.get("after"), s.get("crmask"))))
    counts = previews.get("cr_counts")
    if counts:
        jobs.append(("cr_counts", "CR pixels per science frame", name_for("cr_counts"),
                     lambda p, c=list(counts): _counts_png(mpl, p, c)))
    items = []
    for kind, name, fname, job in jobs:
        path = os.path.join(pdir, fname)
        try:
            job(path)
        except Exception as exc:   # a preview must never cost the report
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.warning("preview %s %s not made: %s", kind, name, reason)
            items.append({"kind": kind, "name": name, "path": None, "error": reason})
        else:
            items.append({"kind": kind, "name": name, "path": path, "error": None})
    return items


def make_previews(out_dir, previews):
    """Write the preview PNGs into ``out_dir/previews/``; return their paths.

    ``previews`` is ``{"masters": {name: 2-D array}, "science": [{"name": stem,
    "before": 2-D, "after": 2-D, "crmask": bool 2-D}, ...], "cr_counts":
    [(file, cr_pixels), ...]}`` (every key optional; arrays may be numpy or
    anything ``np.asarray`` accepts). Returns ``[]`` without matplotlib.
    """
    items = render(out_dir, previews)
    return [it["path"] for it in items or [] if it["path"]]
