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

* Previews are drawn with Pillow (which matplotlib, the ``plot`` extra,
  brings) on a plain RGB sheet, text in matplotlib's DejaVu Sans: no
  matplotlib import (0.9 s) and no figure layout, 3.4 s less CPU on a night
  of 20 frames of 2048^2, whose previews share the cores with its last
  frames. No global state (fonts are per thread): safe in worker threads.
* Large frames are shrunk by an integer factor so each image is at most
  :data:`MAX_PIX` pixels on a side: the image by a block mean, the CR mask by
  a block *maximum* (a block with one CR pixel is shown as CR), so every CR
  stays visible. Each binned pixel is drawn as a whole number of screen
  pixels (small images enlarged to ~300 px), so no binned row or column --
  and no CR -- is dropped. Unless the image is drawn enlarged (>= 3 screen
  px per pixel), each isolated mask pixel is grown to a 3x3 dot for display,
  so a lone single-pixel CR is seen rather than an invisible speck; larger
  CRs are drawn at their (pooled) size.
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
import threading
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

_GREYS = 64       # grey steps of a preview image
_CR_RGB = (1.0, 0.08, 0.08)   # CR overlay colour: red, visible on any grey
_BAR_RGB = "#c0392b"


def plot_available():
    """True when matplotlib (the ``plot`` extra) is installed: found, not
    imported (the import takes 0.9 s; the previews are drawn with Pillow,
    which matplotlib brings, and matplotlib's fonts)."""
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


_FONTS = threading.local()   # one FreeType face per thread: faces are not shared


def _font(size, bold=False):
    """DejaVu Sans (shipped with matplotlib, found without importing it) at
    ``size`` px, or Pillow's own default font; loaded once per thread."""
    cache = _FONTS.__dict__.setdefault("fonts", {})
    if (size, bold) not in cache:
        import importlib.util

        from PIL import ImageFont

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        try:
            root = importlib.util.find_spec("matplotlib").submodule_search_locations[0]
            font = ImageFont.truetype(os.path.join(root, "mpl-data", "fonts", "ttf", name),
                                      size)
        except Exception:   # no such font file: Pillow's default still draws text
            font = ImageFont.load_default(size=size)
        cache[size, bold] = font
    return cache[size, bold]


class _Sheet:
    """A white RGB canvas (``h`` x ``w`` uint8) that images are pasted into
    and text is written on, saved as a palette PNG."""

    def __init__(self, w, h):
        from PIL import Image, ImageDraw

        self.img = Image.new("RGB", (int(w), int(h)), "white")
        self.draw = ImageDraw.Draw(self.img)

    def paste(self, rgb, x, y, scale=1):
        """Paste ``rgb`` ((ny, nx, 3) floats in [0, 1], row 0 at the bottom,
        as astronomers show frames) at ``(x, y)``, each pixel ``scale`` x
        ``scale`` screen pixels (nearest: no row, column or CR dropped)."""
        from PIL import Image

        a = np.rint(np.clip(rgb[::-1], 0.0, 1.0) * 255).astype(np.uint8)
        if scale > 1:
            a = np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)
        self.img.paste(Image.fromarray(a, mode="RGB"), (int(x), int(y)))

    def text(self, x, y, words, size, bold=False, fill="black", anchor="la"):
        self.draw.text((x, y), words, font=_font(size, bold), fill=fill, anchor=anchor)

    def vtext(self, x, y, words, size, fill="black"):
        """``words`` reading upwards, centred on ``(x, y)``."""
        from PIL import Image, ImageDraw

        font = _font(size)
        l, t, r, b = font.getbbox(words)
        label = Image.new("L", (r - l + 2, b - t + 2), 0)
        ImageDraw.Draw(label).text((1 - l, 1 - t), words, font=font, fill=255)
        label = label.rotate(90, expand=True)
        self.img.paste(fill, (int(x - label.width / 2), int(y - label.height / 2)), label)

    def save(self, path):
        """Write the sheet as a palette PNG, atomically."""
        rgb = np.asarray(self.img)
        data = _palette_png(rgb, keep=[tuple(int(round(255 * v)) for v in _CR_RGB)])
        with atomic_open(path, overwrite=True, mode="wb") as f:
            f.write(data)


def _scale(shape):
    """Screen pixels per (binned) pixel: at least 1, and small images are
    enlarged to ~300 px so they stay legible."""
    return max(1, math.ceil(300 / max(shape)))


def _nice_ticks(hi, n=5):
    """About ``n`` round tick values (1, 2 or 5 x 10^k steps) from 0 to ``hi``."""
    if not hi > 0:
        return [0.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(hi // step) + 1)]


# --------------------------------------------------------------------------- figures

def _master_png(path, name, data):
    data = _as_image(data, f"master {name}")
    f = _factor(data.shape)
    small = _bin_mean(data, f)
    lo, hi = _zscale(data)
    k = _scale(small.shape)
    h, w = small.shape[0] * k, small.shape[1] * k
    left, top, bar = 15, 55, 15
    sheet = _Sheet(left + w + 110, top + h + 15)
    sheet.paste(_grey_rgb(small, lo, hi), left, top, k)
    # the colour bar: the same grey steps from lo (bottom) to hi (top)
    ramp = np.linspace(lo, hi, h, dtype=np.float64)[:, None] * np.ones((1, bar))
    x0 = left + w + 12
    sheet.paste(_grey_rgb(ramp, lo, hi), x0, top)
    sheet.draw.rectangle((x0, top, x0 + bar - 1, top + h - 1), outline="black")
    for v in np.linspace(lo, hi, 5):
        y = top + h - 1 - (v - lo) / (hi - lo) * (h - 1)
        sheet.draw.line((x0 + bar, y, x0 + bar + 3, y), fill="black")
        sheet.text(x0 + bar + 6, y, f"{v:.4g}", 10, anchor="lm")
    ny, nx = data.shape
    finite = data[np.isfinite(data)]
    med = f"median {np.median(finite):.4g}" if finite.size else "no finite pixels"
    sheet.text(left, 8, f"master {name}", 14, bold=True)
    sheet.text(left, 32, f"{nx}x{ny} px, {med}, zscale [{lo:.4g}, {hi:.4g}]"
               + (f", binned {f}x{f}" if f > 1 else ""), 10)
    sheet.save(path)


def _science_png(path, name, before, after, crmask):
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
    k = _scale(b.shape)
    if k < 3:   # < 3 screen px per image px: make lone CRs visible
        m = _show_lone(m)
    rgb_b = _grey_rgb(b, lo, hi)
    rgb_b[m] = _CR_RGB
    h, w = b.shape[0] * k, b.shape[1] * k
    margin, gap, top = 10, 15, 58
    sheet = _Sheet(2 * w + gap + 2 * margin, top + h + margin)
    sheet.paste(rgb_b, margin, top, k)
    sheet.paste(_grey_rgb(a, lo, hi), margin + w + gap, top, k)
    n_cr = int(np.count_nonzero(crmask))
    ny, nx = before.shape
    sheet.text(margin, 8, f"{name}  ({nx}x{ny} px" + (
        f", binned {f}x{f}, CR mask max-pooled" if f > 1 else "") + ")", 13, bold=True)
    sheet.text(margin + w / 2, top - 5, f"before: {n_cr} CR pixels in red", 11,
               fill="#b00000", anchor="md")
    sheet.text(margin + w + gap + w / 2, top - 5, "after CR cleaning", 11, anchor="md")
    sheet.save(path)


def _counts_png(path, counts):
    rows = [(str(f), c) for f, c in counts if c is not None]
    values = np.array([float(c) for _, c in rows], dtype=float)
    if values.size == 0:
        raise ValueError("no CR counts")
    n = values.size
    labels = n <= 40
    left, right, top, bottom = 70, 15, 35, (150 if labels else 45)
    W, H = 800, 360 + (110 if labels else 0)
    pw, ph = W - left - right, H - top - bottom
    sheet = _Sheet(W, H)
    d = sheet.draw
    ymax = values.max() * 1.05 or 1.0   # (all zero: an empty axis up to 1)
    ticks = _nice_ticks(ymax)

    def y_of(v):
        return top + ph - v / ymax * ph

    for t in ticks:
        d.line((left - 4, y_of(t), left, y_of(t)), fill="black")
        sheet.text(left - 7, y_of(t), f"{t:.6g}", 10, anchor="rm")
    slot = pw / n
    if slot >= 1:   # one bar a frame, 80 % of its slot
        for i, v in enumerate(values):
            x0 = left + (i + 0.1) * slot
            d.rectangle((x0, y_of(v), max(x0, x0 + 0.8 * slot - 1), top + ph - 1),
                        fill=_BAR_RGB)
    else:   # thousands of frames: each screen column shows its frames' maximum
        cols = np.maximum.reduceat(values, np.unique((np.arange(pw) * n) // pw))
        for j, v in enumerate(cols):
            d.line((left + j, y_of(v), left + j, top + ph - 1), fill=_BAR_RGB)
    d.rectangle((left, top, left + pw, top + ph), outline="black")
    if labels:
        for i, (fname, _) in enumerate(rows):
            x = left + (i + 0.5) * slot
            d.line((x, top + ph, x, top + ph + 4), fill="black")
            lab = os.path.basename(fname)
            half = _font(9).getlength(lab) / 2
            sheet.vtext(x, top + ph + 8 + half, lab, 9)
    else:
        sheet.text(left + pw / 2, H - 12, "science frame (night order)", 11, anchor="md")
    sheet.vtext(18, top + ph / 2, "CR pixels", 11)
    sheet.text(left + pw / 2, 10, f"CR pixels per science frame ({n} frames, median "
               f"{np.median(values):.0f})", 12, anchor="ma")
    sheet.save(path)


# --------------------------------------------------------------------------- driver

def render(out_dir, previews):
    """Make the previews; a list of ``{"kind", "name", "path", "error"}`` items.

    ``path`` is the PNG written (``None`` on error); ``error`` is a one-line
    reason (``None`` on success). Returns ``None`` without matplotlib.
    """
    if not plot_available():
        return None
    if not previews:
        return []
    pdir = os.path.join(os.fspath(out_dir), PREVIEW_DIR)
    os.makedirs(pdir, exist_ok=True)
    name_for = _Namer()
    jobs = []
    for name, data in (previews.get("masters") or {}).items():
        jobs.append(("master", str(name), name_for(f"master_{_safe(name)}"),
                     lambda p, n=str(name), d=data: _master_png(p, n, d)))
    for sci in previews.get("science") or []:
        stem = str(sci.get("name", "frame"))
        jobs.append(("science", stem, name_for(f"frame_{_safe(stem)}"),
                     lambda p, s=sci, n=stem: _science_png(
                         p, n, s.get("before"), s.get("after"), s.get("crmask"))))
    counts = previews.get("cr_counts")
    if counts:
        jobs.append(("cr_counts", "CR pixels per science frame", name_for("cr_counts"),
                     lambda p, c=list(counts): _counts_png(p, c)))
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
