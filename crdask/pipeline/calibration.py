"""Masters and calibrated science frames for a night of raw files (layer 4).

Flow (driven by :func:`crdask.pipeline.night.run_night`): catalogue the directory (headers only) ->
check every frame and set aside the ones that cannot be used, with a one-line
reason -> master bias per (shape, binning) -> master dark current (e-/s) from
bias-subtracted darks divided by their exposure time -> master flat per
instrument setup (filter/grism/slit/binning/window,
:mod:`crdask.pipeline.spectro_masters`) from bias- and dark-corrected flats,
each scaled to unit median, combined and normalised (imaging: by one number;
spectroscopy with ``flat_norm: response``: by the response along the
dispersion) -> bad-pixel mask (hot pixels in the dark, low response in the
imaging flats; a spectroscopic setup's own from its normalised flat) ->
every science frame calibrated to electrons with variance and mask
bits. Everything is lazy Dask arrays read chunk by chunk from the raw files
(full-width row strips, so a per-row overscan needs no halo) and computed
with whatever scheduler is active (threads by default, or a
``distributed.Client``).

Decisions, written down:

* Pre-processing of every raw frame (``electrons``): overscan from the
  ``overscan`` setting (a header keyword such as BIASSEC, or FITS section
  text), per-row median by default; trim to ``trim`` (DATASEC); x gain.
  A frame with no such keyword is not overscan-corrected / not trimmed, and
  the HISTORY says so.
* With ``amplifiers`` set (``instrument.amplifiers``), ``electrons`` corrects
  each amplifier on its own instead (overscan level, gain, read-noise map)
  and assembles the frame in detector order (:mod:`.amplifier_frames`).
* Gain and read noise come from the setup, else from the header keywords of
  the catalogue's keyword map; a frame with neither is set aside.
* Masters are combined with an average after one pass of sigma clipping
  (median centre, standard deviation, 3 sigma: ccdproc's defaults);
  configurable. (A MAD-based spread clips too eagerly with ~10 frames: the
  master bias came out 7% noisier than sigma_read / sqrt(N) in our tests.)
* Master variances are modelled, not measured: bias ``rn^2 / N``; dark
  current ``(rn^2 + var_bias + max(dark t, 0)) / (N t^2)`` at the median dark
  time; flat ``1 / (N * level)`` (Poisson at the flats' median level ``level``
  e-). Per-pixel scatter would be too noisy with N ~ 10 frames.
* Frames set aside: unreadable files, missing EXPTIME (darks, flats,
  science), dark with EXPTIME <= 0, a shape or binning different from the
  group's majority, an all-NaN frame, a flat whose median is <= 0, missing
  gain/read noise. Each gets one line ``FILE[HDU]: problem``; the rest of the
  night is reduced. Raw files are only ever opened read-only.
"""

import os
from collections import Counter
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from ..calib.overscan import subtract_overscan, trim
from ..io.catalog import KeywordMap
from ..io.fits import FitsInputError
from ..io.products import write_master
from ..io.raw import open_lazy, read_header
from ..io.sections import header_section, parse_section
from .amplifier_frames import amplifier_frame
from .master_frames import (FrameRejected, Master, bad_pixel_mask, master_flat, nanmedian,
                            per_frame, setup_bad_pixels)
from .master_frames import central as _central
from .master_frames import combine_frames as _combine
from .master_frames import where as _where
from .spectro_masters import RESPONSE_DEFAULTS, night_labels

__all__ = ["CalibSetup", "FrameRejected", "electrons", "build_masters"]


def _default_combine():
    return dict(method="average", sigma_clip=True, sigma_clip_low_thresh=3.0,
                sigma_clip_high_thresh=3.0, sigma_clip_func="median",
                sigma_clip_dev_func="std", maxiters=1)


@dataclass
class CalibSetup:
    """How one instrument's raw frames are read, pre-processed and combined.

    hdu : image HDU (index or EXTNAME), None = first with 2-D data.
    keymap : header keywords (see :class:`crdask.io.catalog.KeywordMap`).
    overscan, trim : header keyword (e.g. 'BIASSEC', 'DATASEC') or FITS
        section text '[x1:x2,y1:y2]' (1-based, inclusive); None = none.
    overscan_statistic, overscan_fit, overscan_order : see
        :func:`crdask.calib.overscan.overscan_model`.
    bias_level : a constant bias in ADU (number, or a header keyword holding
        it) subtracted after any overscan correction -- for instruments
        without an overscan strip (e.g. SPRAT, ~917 ADU); None = none.
    gain (e-/ADU), readnoise (e-) : override the header values.
    saturation : ADU; None = header SATURATE, else 65535.
    combine_kw : keyword arguments of :func:`crdask.calib.combine.combine`.
    combine_by_kind : per-master overrides of ``combine_kw`` ('bias', 'dark',
        'flat'). By default darks and flats clip with a MAD-based spread: with
        fewer than ~11 frames a single cosmic ray can never stand 3 standard
        deviations out (the standard deviation includes it), so std clipping
        would leave CR tracks in the master dark.
    flat_region : FITS section (trimmed pixels) where flats are normalised;
        None = the central half in each axis.
    flat_norm : 'median' or 'mode' (mode = 3 median - 2 mean, Pearson).
    hot_sigma, hot_floor : dark-current pixels above median + hot_sigma *
        robust sigma and above hot_floor e-/s are bad.
    low_flat : flat pixels below this response are bad (imaging flats).
    chunk_rows : rows per chunk when reading raw frames.
    amplifiers : None = one amplifier (``overscan``, ``trim``, ``gain``,
        ``readnoise`` above); ``'header'`` = each frame's amplifier keywords
        (numbered ``DATASECn``/``BIASSECn``/``GAINn``/``RDNOISEn``/``DETSECn``,
        :func:`crdask.io.amplifiers.amplifiers_from_header`); or a list of
        mappings as ``instrument.amplifiers`` in a workflow. With amplifiers,
        every frame (bias, dark, flat, science) is corrected per amplifier and
        assembled in detector order (:mod:`crdask.pipeline.amplifier_frames`).
    mode : 'imaging' or 'spectroscopy'; mode_keyword : header keyword that
        says it per frame (:func:`crdask.pipeline.spectro_masters.frame_mode`).
    dispersion_axis : 1 (x), 2 (y) or None (header DISPAXIS).
    response : settings of :func:`crdask.calib.response.normalise_response`
        for spectroscopic flats when ``flat_norm`` is 'response'.
    """

    hdu: object = None
    keymap: KeywordMap = field(default_factory=KeywordMap)
    overscan: str | None = "BIASSEC"
    trim: str | None = "DATASEC"
    overscan_statistic: str = "median"
    overscan_fit: str | None = None
    overscan_order: int = 3
    bias_level: object = None
    gain: float | None = None
    readnoise: float | None = None
    saturation: float | None = None
    combine_kw: dict = field(default_factory=_default_combine)
    combine_by_kind: dict = field(default_factory=lambda: {
        "dark": {"sigma_clip_dev_func": "mad_std"},
        "flat": {"sigma_clip_dev_func": "mad_std"}})
    flat_region: str | None = None
    flat_norm: str = "median"
    hot_sigma: float = 8.0
    hot_floor: float = 0.5
    low_flat: float = 0.5
    chunk_rows: int = 512
    amplifiers: object = None
    # spectroscopy (crdask.pipeline.spectro_masters); kept last for merges
    mode: str = "imaging"
    mode_keyword: str | None = None
    dispersion_axis: int | None = None
    response: dict = field(default_factory=lambda: dict(RESPONSE_DEFAULTS))


@dataclass
class Prepared:
    """A raw frame as lazy electrons (trimmed) with what was used to get there."""

    path: str
    header: object
    data: object        # dask (ny, nx) float32 e-
    saturated: object   # dask (ny, nx) bool
    gain: float
    readnoise: float
    exptime: float | None
    notes: list
    readnoise_map: object = None   # dask (ny, nx) float32 e- per amplifier, or None
    layout: object = None          # crdask.calib.amplifiers.AmplifierLayout, or None


def _section(header, spec, path, setup, shape):
    if spec is None:
        return None
    if spec.strip().startswith("["):
        return parse_section(spec, shape=shape, where=f"{_where(path, setup, header)} section")
    return header_section(header, spec, shape=shape)


def _header_number(header, keys, value, what, path, setup):
    if value is not None:
        return float(value)
    for k in keys:
        if k in header:
            try:
                v = float(header[k])
            except (TypeError, ValueError):
                raise FrameRejected(f"{_where(path, setup, header)} {k}: {what} is not a "
                                    f"number ({header[k]!r})") from None
            if np.isfinite(v):
                return v
    raise FrameRejected(f"{_where(path, setup, header)}: no {what} ({'/'.join(keys)}) in "
                        "the header and none given")


def electrons(path, setup, exptime=None):
    """Lazy pre-processed frame: overscan-subtracted, trimmed, in electrons.

    Raises :class:`FrameRejected` (one line) when the file or its header
    cannot be used.
    """
    try:
        header = read_header(path, setup.hdu)
        raw = open_lazy(path, setup.hdu, chunks=(setup.chunk_rows, -1))
    except FitsInputError as e:
        raise FrameRejected(str(e)) from None
    satlevel = setup.saturation
    if satlevel is None:
        satlevel = float(header.get("SATURATE", 65535.0))
    saturated = raw >= np.float32(satlevel)
    if setup.amplifiers is not None:
        try:
            amp = amplifier_frame(raw, saturated, header, setup,
                                  where=_where(path, setup, header))
        except ValueError as e:
            raise FrameRejected(str(e).splitlines()[0]) from None
        return Prepared(path=str(path), header=header, data=amp.data,
                        saturated=amp.saturated, gain=amp.gain, readnoise=amp.readnoise,
                        exptime=exptime, notes=amp.notes, readnoise_map=amp.readnoise_map,
                        layout=amp.layout)
    shape = raw.shape
    notes = []
    gain = _header_number(header, setup.keymap.gain_keys, setup.gain, "gain", path, setup)
    if not gain > 0:
        key = "instrument.gain" if setup.gain is not None else next(
            (k for k in setup.keymap.gain_keys if k in header), "gain")
        raise FrameRejected(f"{_where(path, setup, header)} {key}: gain must be > 0 e-/ADU, "
                            f"got {gain}")
    rn = _header_number(header, setup.keymap.rdnoise_keys, setup.readnoise, "read noise",
                        path, setup)
    try:
        oscan = _section(header, setup.overscan, path, setup, shape)
        tsec = _section(header, setup.trim, path, setup, shape)
    except ValueError as e:
        raise FrameRejected(str(e).splitlines()[0]) from None
    level = 0.0
    if setup.bias_level is not None:
        level = setup.bias_level
        if isinstance(level, str):
            level = _header_number(header, (level,), None, f"bias level ({level})", path, setup)
    # overscan, bias level and gain in one pass over the pixels (the
    # overscan strip's columns too: elementwise work commutes with the trim)
    data = subtract_overscan(raw, oscan, statistic=setup.overscan_statistic,
                             fit=setup.overscan_fit, order=setup.overscan_order,
                             level=level, gain=gain)
    if oscan is None:
        notes.append("no overscan correction")
    else:
        fit = f" {setup.overscan_fit}({setup.overscan_order})" if setup.overscan_fit else ""
        notes.append(f"overscan {oscan} {setup.overscan_statistic}{fit}")
    if setup.bias_level is not None:
        notes.append(f"bias level {float(level):g} ADU subtracted")
    if tsec is not None:
        data = trim(data, tsec)
        saturated = trim(saturated, tsec)
        notes.append(f"trim {tsec}")
    return Prepared(path=str(path), header=header, data=data, saturated=saturated,
                    gain=gain, readnoise=rn, exptime=exptime, notes=notes)


# --- checks -----------------------------------------------------------------

def check_frames(infos, kind, setup, rejected):
    """Frames of one kind that pass the header checks, majority shape only;
    the others are appended to ``rejected`` as ``(path, one-line reason)``."""
    ok = []
    for info in infos:
        where = f"{info.path}[{info.hdu if info.hdu is not None else 0}]"
        if info.error:
            rejected.append((info.path, info.error))
        elif kind in ("dark", "flat", "science") and info.exptime is None:
            rejected.append((info.path, f"{where} EXPTIME: missing or not a number"))
        elif kind in ("flat", "science") and not info.exptime >= 0:
            rejected.append((info.path, f"{where} EXPTIME: exposure time must be >= 0, "
                                        f"got {info.exptime}"))
        elif kind == "dark" and not info.exptime > 0:
            rejected.append((info.path, f"{where} EXPTIME: dark exposure time must be > 0, "
                                        f"got {info.exptime}"))
        else:
            ok.append(info)
    if not ok:
        return ok
    common = Counter((i.shape, i.binning) for i in ok).most_common(1)[0][0]
    kept = []
    for info in ok:
        if (info.shape, info.binning) != common:
            rejected.append((info.path, f"{info.path}[{info.hdu or 0}]: shape {info.shape} "
                                        f"binning {info.binning} differs from the {kind} "
                                        f"frames' {common[0]} binning {common[1]}"))
        else:
            kept.append(info)
    return kept


def _prepare_all(infos, setup, rejected, exptimes=True):
    out = []
    for info in infos:
        try:
            out.append(electrons(info.path, setup, info.exptime if exptimes else None))
        except FrameRejected as e:
            rejected.append((info.path, str(e)))
    return out


def _drop_empty(preps, rejected, kind, floor=None):
    """Set aside all-NaN frames (and, with a ``floor``, frames whose median
    is <= floor: flats), from one look at each frame's central region;
    returns the frames kept. Frames in memory are looked at on this
    process's threads (numpy releases the GIL), lazy ones by Dask."""
    if not preps:
        return []

    def look(p):
        c = p.data[_central(p.data.shape)]
        return np.isfinite(c).sum(), (nanmedian(c) if floor is not None else None)
    stats = per_frame(look, preps, [p.data for p in preps], compute=True)
    kept = []
    for p, (nfin, med) in zip(preps, stats):
        if nfin == 0:
            rejected.append((p.path, f"{p.path}: no finite pixels in the frame's centre "
                                     f"(all-NaN {kind} frame)"))
        elif floor is not None and not med > floor:
            rejected.append((p.path, f"{p.path}: {kind} median level {med:.3g} e- is not "
                                     f"positive"))
        else:
            kept.append(p)
    return kept


#: Largest total size of one master's pre-processed input frames read into
#: memory at once (float32 e-). Within it every calibration frame is read
#: once: its sanity statistics, its flat level and the combination all use
#: the same in-memory copy (the lazy graph read each frame three times, 6 s
#: of a 20-frame 2048x2048 night). Larger sets stay lazy, in row strips, with
#: bounded memory.
MEMORY_BUDGET = 1 << 30


def _read_once(preps, budget=None):
    """The frames' ``data`` computed into numpy arrays in one threaded pass
    (each raw file read once) when they fit in ``budget`` bytes; else as
    they are (lazy). Returns ``preps``."""
    budget = MEMORY_BUDGET if budget is None else budget
    lazy = [p for p in preps if isinstance(p.data, da.Array)]
    if lazy and sum(4 * p.data.size for p in lazy) <= budget:
        for p, a in zip(lazy, dask.compute(*[p.data for p in lazy])):
            p.data = np.asarray(a)
    return preps


# --- masters -------------------------------------------------------------------

def master_bias(preps, setup):
    """Master bias (e-) from pre-processed bias frames."""
    data, count = _combine([p.data for p in preps], setup, "bias")
    rn = float(np.median([p.readnoise for p in preps]))
    var = (np.float32(rn * rn) / da.maximum(count, 1)).astype(np.float32)
    return Master("bias", data, var, count, [p.path for p in preps],
                  {"n": len(preps), **setup.combine_kw, **setup.combine_by_kind.get("bias", {})},
                  {"BUNIT": "electron"})


def master_dark(preps, setup, bias):
    """Master dark current (e-/s) from bias-subtracted darks / EXPTIME."""
    frames = per_frame(lambda p: (p.data - bias.data) / np.float32(p.exptime), preps,
                       [p.data for p in preps] + [bias.data])
    data, count = _combine(frames, setup, "dark")
    t = float(np.median([p.exptime for p in preps]))
    rn = float(np.median([p.readnoise for p in preps]))
    var = ((np.float32(rn * rn) + bias.variance + da.maximum(data * np.float32(t), 0))
           / (da.maximum(count, 1) * np.float32(t * t))).astype(np.float32)
    return Master("dark", data, var, count, [p.path for p in preps],
                  {"n": len(preps), "median_exptime": t, **setup.combine_kw,
                   **setup.combine_by_kind.get("dark", {})},
                  {"BUNIT": "electron/s", "EXPTIME": t})


# --- the night ------------------------------------------------------------------

def build_masters(catalog, setup, rejected):
    """Masters from a catalogue: ``{'bias': Master, 'dark': Master,
    'flat': {label: Master}, 'bpm': bool, 'bpm_setup': {label: bool}}``
    (missing kinds are None). The arrays are numpy when each master's input
    frames fit in :data:`MEMORY_BUDGET` (every frame read once, see
    :func:`_read_once`), else lazy Dask arrays; ``dask.compute`` takes both.
    Flats are grouped by the catalogue's
    setup (labels: :func:`crdask.pipeline.spectro_masters.night_labels`);
    a spectroscopic setup normalised by its response has its own mask in
    ``bpm_setup``."""
    by_type = {}
    for info in catalog.frames:
        if info.error:  # unreadable: set aside here, whatever its type
            rejected.append((info.path, info.error))
            continue
        by_type.setdefault(info.frame_type, []).append(info)
    out = {"bias": None, "dark": None, "flat": {}, "bpm": None, "bpm_setup": {}}
    biases = _read_once(_prepare_all(check_frames(by_type.get("bias", []), "bias", setup,
                                                  rejected), setup, rejected, exptimes=False))
    biases = _drop_empty(biases, rejected, "bias")
    if biases:
        out["bias"] = master_bias(biases, setup)
    darks = _read_once(_prepare_all(check_frames(by_type.get("dark", []), "dark", setup,
                                                 rejected), setup, rejected))
    darks = _drop_empty(darks, rejected, "dark")
    if darks and out["bias"] is not None:
        out["dark"] = master_dark(darks, setup, out["bias"])
    del biases, darks   # their in-memory frames are combined: free them
    labels = night_labels(catalog.frames, setup.keymap)
    flats_by_setup = {}
    for info in by_type.get("flat", []):
        flats_by_setup.setdefault(info.setup, []).append(info)
    for name, infos in sorted(flats_by_setup.items(), key=lambda kv: str(kv[0])):
        infos = check_frames(infos, "flat", setup, rejected)
        preps = _read_once(_prepare_all(infos, setup, rejected))
        preps = _drop_empty(preps, rejected, "flat", floor=0.0)
        if not preps:
            continue
        try:
            m = master_flat(preps, setup, out["bias"], out["dark"], infos[0].filter,
                            label=labels[name], setup_name=name)
        except FrameRejected as e:   # e.g. no dispersion axis: this setup only
            rejected.extend((p.path, str(e)) for p in preps)
            continue
        out["flat"][labels[name]] = m
        if m.bad is not None:
            out["bpm_setup"][labels[name]] = setup_bad_pixels(out["dark"], m, setup)
    if out["dark"] is not None or any(m.bad is None for m in out["flat"].values()):
        out["bpm"] = bad_pixel_mask(out["dark"], out["flat"], setup)
    return out


def write_masters(masters, out_dir, overwrite, checksums=None):
    """Compute and write the masters of :func:`build_masters` into
    ``out_dir``; returns ``{key: path}`` (``bias``, ``dark``, ``flat_<f>``,
    ``bpm``). ``checksums``: ``{input path: SHA-256}`` already known (e.g.
    from the ledger's cache), so the inputs are not hashed again."""
    paths = {}
    todo = []
    for kind in ("bias", "dark"):
        if masters[kind] is not None:
            todo.append((f"master_{kind}.fits", masters[kind]))
    for label, m in masters["flat"].items():
        todo.append((f"master_flat_{label}.fits", m))
    computed = dask.compute(*[(m.data, m.variance, m.count) for _, m in todo])
    for (name, m), (data, var, count) in zip(todo, computed):
        path = os.path.join(out_dir, name)
        write_master(path, data, kind=m.kind, unit=m.header.get("BUNIT", ""), inputs=m.inputs,
                     params=m.params, variance=var, count=count,
                     header=_fits_header(m.header), overwrite=overwrite, checksums=checksums)
        m.data, m.variance, m.count = data, var, count   # reuse for science frames
        key = m.kind if m.kind != "flat" else f"flat_{m.params['label']}"
        paths[key] = path
    if masters["bpm"] is not None:
        bpm = np.asarray(dask.compute(masters["bpm"])[0])
        masters["bpm"] = bpm
        path = os.path.join(out_dir, "master_bpm.fits")
        inputs = sorted({p for _, m in todo if m.kind in ("dark", "flat") for p in m.inputs})
        write_master(path, bpm.astype(np.float32), kind="bpm", unit="", inputs=inputs,
                     params={"meaning": "1=bad"}, overwrite=overwrite, checksums=checksums)
        paths["bpm"] = path
    for label, lazy in sorted(masters.get("bpm_setup", {}).items()):
        bpm = np.asarray(dask.compute(lazy)[0])
        masters["bpm_setup"][label] = bpm
        m = masters["flat"][label]
        path = os.path.join(out_dir, f"master_bpm_{label}.fits")
        inputs = sorted({*m.inputs, *(masters["dark"].inputs if masters["dark"] else [])})
        write_master(path, bpm.astype(np.float32), kind="bpm", unit="", inputs=inputs,
                     params={"meaning": "1=bad", "setup": m.params["setup"],
                             "from": "response-normalised flat"},
                     header=_fits_header({"SETUP": m.params["setup"] or "-"}),
                     overwrite=overwrite, checksums=checksums)
        paths[f"bpm_{label}"] = path
    return paths


def master_arrays(masters):
    """``{key: float32 array}`` of masters already written by
    :func:`write_masters` (the keys of its paths), as the files hold them
    (bad-pixel masks as 0/1 floats): what the intermediates keep, without
    reading the files back."""
    out = {}
    for kind in ("bias", "dark"):
        if masters[kind] is not None:
            out[kind] = masters[kind].data
    for label, m in masters["flat"].items():
        out[f"flat_{label}"] = m.data
    if masters["bpm"] is not None:
        out["bpm"] = masters["bpm"]
    for label, bpm in masters.get("bpm_setup", {}).items():
        out[f"bpm_{label}"] = bpm
    return {k: np.asarray(a).astype(np.float32, copy=False) for k, a in out.items()}


def _fits_header(d):
    from astropy.io import fits
    h = fits.Header()
    for k, v in d.items():
        h[k] = v
    return h


__all__ += ["Master", "master_bias", "master_dark", "master_flat", "bad_pixel_mask",
            "setup_bad_pixels", "check_frames", "write_masters", "master_arrays"]
