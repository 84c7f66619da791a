"""A whole synthetic night of raw frames on disk, with the truth kept apart.

:func:`write_night` writes what an observer brings home -- biases, darks of
several exposure times, dome flats per filter and science frames taken in
groups of equivalent exposures -- as raw FITS files (see
:mod:`crdask.simulate.raw`) into one directory, and everything a test needs to
grade a reduction (true CR masks, bias, dark current, flats, gain, read noise,
group membership, star catalogues) into a *separate* truth directory, never
into the raw files or the raw directory.

Layout (``write_night('night')`` with the defaults)::

    night/                       raw frames only
        bias_001.fits ... bias_010.fits
        dark_60s_001.fits ... dark_60s_005.fits, dark_300s_001.fits ...
        flat_V_001.fits ... flat_V_007.fits, flat_R_001.fits ...
        sci_field01_V_001.fits ... (groups of 3-5, one field + filter each)
    night_truth/
        manifest.json            the NightManifest (files, groups, truth paths)
        detector.npz             bias (ADU, raw shape, without per-frame
                                 offsets), dark_current (e-/s), flat_<filter>,
                                 gain, readnoise
        crmask/<stem>.npz        ``crmask`` (bool, imaging area) per dark and
                                 science frame (compressed)
        stars/<group>.npz        x, y, flux (e-/s), fwhm of the group's stars

Science groups: group ``g`` observes field ``g // len(filters) + 1`` in
filter ``filters[g % len(filters)]``, so each field is taken in every filter
in turn; its members share the star field (colours differ per filter), the
exposure time and OBJECT, with a sub-pixel dither each. Group sizes are drawn
in ``group_size`` and add up to ``n_science`` (fewer than ``group_size[0]``
science frames make one smaller group). DATE-OBS runs through the night in
observing order: calibrations from 16:00 UTC, science from 20:00, 30 s of
readout between frames.

The damage helpers (:func:`truncate`, :func:`drop_keyword`,
:func:`wrong_shape`, also as ``damage.truncate`` ...) make broken *copies* of
a frame for tests of the error handling; originals are never touched.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..io.atomic import atomic_open
from .detector import Detector, bias_model, dark_current_map, filter_hash, flat_response
from .raw import default_flat_exptime, make_star_field, simulate_raw
from .writers import FORMATS, double_hit_charge, raw_name, write_raw

__all__ = ["NightManifest", "write_night", "truncate", "drop_keyword", "wrong_shape",
           "damage", "LAYOUTS"]

#: Science layouts: equivalent exposures in ``pairs`` or ``groups`` of 3-5.
LAYOUTS = ("groups", "pairs")

#: Seconds between the end of one exposure and the start of the next.
READOUT_S = 30.0
MANIFEST_NAME = "manifest.json"


@dataclass
class NightManifest:
    """What :func:`write_night` wrote; JSON-serialisable (``to_dict``).

    directory, truth_dir : absolute paths (str).
    files : one dict per raw file in observing order: ``name`` (relative to
        ``directory``), ``kind`` (bias/dark/flat/science), ``imagetyp``,
        ``exptime``, ``filter``, ``object``, ``date_obs``, ``seed`` (SIMSEED),
        ``group`` (group id or None), and truth: ``bias_offset`` (ADU),
        ``n_cosmics``, ``n_crpix``, ``dither`` ([dx, dy] px, science),
        ``lamp_scale`` (flats), ``truth`` ({'crmask': path relative to
        ``truth_dir``} for darks and science frames, else {}).
    groups : one dict per science group: ``id``, ``object``, ``filter``,
        ``exptime``, ``members`` (file names), ``dithers``, ``stars`` (path
        relative to ``truth_dir``).
    truth : {'manifest': ..., 'detector': ...} relative to ``truth_dir``.
    detector : :meth:`Detector.to_dict` (true gain, read noise, bias level, ...).
    seed, elapsed_s : night seed; wall time of :func:`write_night`, s.
    """

    directory: str
    truth_dir: str
    seed: int
    detector: dict
    files: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    truth: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    # -- paths -------------------------------------------------------------

    def path(self, name) -> Path:
        """Absolute path of a raw file (a name from ``files``)."""
        return Path(self.directory) / name

    def truth_path(self, rel) -> Path:
        """Absolute path of a truth file (a path relative to ``truth_dir``)."""
        return Path(self.truth_dir) / rel

    def select(self, kind=None, *, filter=None, exptime=None, group=None) -> list:
        """File records matching all the given criteria."""
        out = []
        for rec in self.files:
            if kind is not None and rec["kind"] != kind:
                continue
            if filter is not None and rec["filter"] != filter:
                continue
            if exptime is not None and rec["exptime"] != float(exptime):
                continue
            if group is not None and rec["group"] != group:
                continue
            out.append(rec)
        return out

    def crmask(self, name) -> np.ndarray:
        """The true CR mask (bool, imaging area) of a dark or science frame."""
        rec = next((r for r in self.files if r["name"] == name), None)
        if rec is None or "crmask" not in rec["truth"]:
            raise KeyError(f"no CR truth for {name!r}")
        with np.load(self.truth_path(rec["truth"]["crmask"])) as z:
            return z["crmask"]

    def detector_truth(self) -> dict:
        """The arrays of ``detector.npz`` (bias, dark_current, flat_<filter>, ...)."""
        with np.load(self.truth_path(self.truth["detector"])) as z:
            return {k: z[k] for k in z.files}

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def load(cls, path) -> "NightManifest":
        """Read a ``manifest.json`` (or the truth directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return cls(**json.loads(path.read_text()))


def _frame_seed(seed, k):
    return int(np.random.SeedSequence([int(seed), 2, int(k)]).generate_state(1)[0]
               & 0x7FFFFFFF)


def _group_sizes(n, lo, hi, rng):
    sizes, rem = [], n
    while rem > 0:
        cands = [s for s in range(lo, min(hi, rem) + 1) if rem - s == 0 or rem - s >= lo]
        if not cands:                       # cannot split within bounds
            sizes.append(rem)
            break
        s = int(rng.choice(cands))
        sizes.append(s)
        rem -= s
    return sizes


def _iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _tname(t):
    t = float(t)
    return f"{int(t)}" if t.is_integer() else f"{t:g}".replace(".", "p")


def write_night(directory, *, shape=(2048, 2048), n_bias=10, dark_times=(60, 300),
                n_dark=5, filters=("V", "R"), n_flat=7, n_science=20, group_size=(3, 5),
                seed=0, truth_dir=None, detector=None, science_times=None,
                date="2024-03-15", imagetyp_variety=False, workers=None,
                overwrite=False, layout="groups", double_hits=0, format="single",
                amplifiers=1) -> NightManifest:
    """Write a night of raw frames into ``directory`` and its truth into ``truth_dir``.

    Parameters
    ----------
    directory : raw directory (created if needed).
    shape : unbinned imaging area (ny, nx); ignored when ``detector`` is given.
    n_bias : biases.  dark_times, n_dark : ``n_dark`` darks per exposure time (s).
    filters, n_flat : ``n_flat`` dome flats per filter.
    n_science, group_size : science frames, in groups of ``group_size[0]`` to
        ``group_size[1]`` equivalent exposures.
    seed : int >= 0; the whole night is a function of it (and the arguments).
    truth_dir : default ``directory.parent / (directory.name + '_truth')``; must
        not be ``directory`` or inside it.
    detector : :class:`~crdask.simulate.raw.Detector`; default
        ``Detector(shape=shape, seed=seed)``.
    science_times : exposure times a group may have (drawn per group); default
        ``dark_times`` (so every science frame has darks of its length), or
        (300,) without darks.
    date : the evening's date (UTC) for DATE-OBS.
    imagetyp_variety : write alias spellings some instruments use (every other
        bias ``'zero'``, science ``'object'``, flats ``'flat'``); OBSTYPE keeps
        the canonical ones.
    workers : threads simulating/writing frames (default ``min(2, cpus)``);
        the output does not depend on it.
    overwrite : replace existing files instead of refusing.
    layout : ``'groups'`` (``group_size`` members each) or ``'pairs'`` (two
        equivalent exposures each; an odd ``n_science`` leaves one single).
    double_hits : number of CR events injected at the *same* pixels of two
        members of every science group with at least two members (the
        first two, in observing order), on top of each frame's own CRs.
        They are real CR pixels (in each frame's ``crmask``) and are also
        recorded apart: the group's ``double_hits`` entry names the two
        members and the truth file ``crmask/<group>_double.npz``
        (``mask``, bool, imaging area); each file record has
        ``n_double_hit_px``. For the Median-Minimum method (a CR in two of
        N frames survives a median of 3).
    format : how files are written (:data:`~crdask.simulate.writers.FORMATS`):
        ``'single'`` (one primary HDU, ``.fits``), ``'mef'`` (GAIN, RDNOISE,
        EXPTIME, DATASEC, BIASSEC, ... in the primary header, pixels in
        extension 1 ``'SCI'``, ``.fits``), ``'gzip'`` (``.fits.gz``) or
        ``'fpack'`` (``.fits.fz``: empty primary + lossless RICE_1 tile
        compression of the uint16 data). Pixels and truth are identical
        whatever the format (same seeds).
    amplifiers : 1 or 2 (see :class:`~crdask.simulate.raw.Detector`);
        ignored when ``detector`` is given.

    Returns
    -------
    NightManifest (also written to ``truth_dir/manifest.json``).
    """
    import time
    t_start = time.perf_counter()
    directory = Path(directory).absolute()
    truth_dir = (directory.parent / (directory.name + "_truth") if truth_dir is None
                 else Path(truth_dir).absolute())
    rd, td = directory.resolve(), truth_dir.resolve()
    if td == rd or rd in td.parents:
        raise ValueError(f"truth_dir {truth_dir} must be outside the raw directory {directory}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if int(double_hits) < 0:
        raise ValueError(f"double_hits must be >= 0, got {double_hits}")
    double_hits = int(double_hits)
    lo, hi = (2, 2) if layout == "pairs" else (int(v) for v in group_size)
    if not 1 <= lo <= hi:
        raise ValueError(f"group_size must be (lo, hi) with 1 <= lo <= hi, got {group_size}")
    filters = tuple(str(f) for f in filters)
    dark_times = tuple(float(t) for t in dark_times)
    if min(n_bias, n_dark, n_flat, n_science) < 0:
        raise ValueError("frame counts must be >= 0")
    if n_science and not filters:
        raise ValueError("science frames need at least one filter")
    if science_times is None:
        science_times = dark_times if (dark_times and n_dark) else (300.0,)
    science_times = tuple(float(t) for t in science_times)
    if detector is None:
        detector = Detector(shape=tuple(shape), seed=seed, amplifiers=int(amplifiers))
    workers = min(2, os.cpu_count() or 1) if workers is None else max(int(workers), 1)
    night0 = _dt.datetime.fromisoformat(str(date))

    # -- plan: every frame in observing order ----------------------------------
    plan_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    specs = []                       # dicts: name, kind, kwargs for simulate_raw

    def add(name, kind, **kw):
        specs.append({"name": name, "kind": kind, **kw})

    for i in range(n_bias):
        typ = "zero" if imagetyp_variety and i % 2 else None
        add(raw_name(f"bias_{i + 1:03d}", format), "bias", imagetyp=typ)
    for t in dark_times:
        for i in range(n_dark):
            add(raw_name(f"dark_{_tname(t)}s_{i + 1:03d}", format), "dark", exptime=t)
    for f in filters:
        for i in range(n_flat):
            add(raw_name(f"flat_{f}_{i + 1:03d}", format), "flat", filter=f,
                exptime=default_flat_exptime(f), imagetyp="flat" if imagetyp_variety else None)
    groups = []
    stars = {}
    counts = {}
    if layout == "pairs":
        sizes = [2] * (int(n_science) // 2) + [1] * (int(n_science) % 2)
    else:
        sizes = _group_sizes(int(n_science), lo, hi, plan_rng) if n_science else []
    for g, size in enumerate(sizes):
        fld = f"field{g // len(filters) + 1:02d}"
        f = filters[g % len(filters)]
        t = float(plan_rng.choice(science_times))
        gid = f"{fld}_{f}_{g + 1:02d}"
        if fld not in stars:
            stars[fld] = make_star_field(detector, _frame_seed(seed, 10_000 + g),
                                         exptime=max(science_times), filter=filters[0])
        colour_rng = np.random.default_rng(
            np.random.SeedSequence([seed, 3, g // len(filters), filter_hash(f)]))
        field_stars = stars[fld].scaled(np.exp(colour_rng.normal(0.0, 0.3,
                                                                 stars[fld].flux.size)))
        dithers = [[float(v) for v in plan_rng.uniform(-0.5, 0.5, 2)] for _ in range(size)]
        members = []
        double = None
        if double_hits and size >= 2:
            double = double_hit_charge(detector, _frame_seed(seed, 20_000 + g), double_hits)
        for i in range(size):
            counts[(fld, f)] = counts.get((fld, f), 0) + 1
            name = raw_name(f"sci_{fld}_{f}_{counts[(fld, f)]:03d}", format)
            members.append(name)
            add(name, "science", exptime=t, filter=f, object=fld, scene=field_stars,
                dither=tuple(dithers[i]), group=gid,
                imagetyp="object" if imagetyp_variety else None,
                extra_crcharge=double if (double is not None and i < 2) else None)
        grp = {"id": gid, "object": fld, "filter": f, "exptime": t,
               "members": members, "dithers": dithers,
               "stars": f"stars/{gid}.npz", "_stars": field_stars}
        if double is not None:
            grp["double_hits"] = {"members": members[:2], "n_events": double_hits,
                                  "mask": f"crmask/{gid}_double.npz", "_charge": double}
        groups.append(grp)

    # DATE-OBS and seeds, in observing order
    clock = night0.replace(hour=16, minute=0, second=0, microsecond=0)
    science_start = night0.replace(hour=20, minute=0, second=0, microsecond=0)
    for k, spec in enumerate(specs):
        if spec["kind"] == "science" and clock < science_start:
            clock = science_start
        spec["date_obs"] = _iso(clock)
        spec["seed"] = _frame_seed(seed, k)
        clock += _dt.timedelta(seconds=float(spec.get("exptime", 0.0)) + READOUT_S)

    # -- refuse to clobber, then write -------------------------------------------
    directory.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clash = [directory / s["name"] for s in specs if (directory / s["name"]).exists()]
        clash += [p for p in (truth_dir / MANIFEST_NAME,) if p.exists()]
        if clash:
            raise FileExistsError(f"{clash[0]} exists (and {len(clash) - 1} more); "
                                  f"pass overwrite=True to replace")
    (truth_dir / "crmask").mkdir(exist_ok=True)
    if groups:
        (truth_dir / "stars").mkdir(exist_ok=True)

    def one(spec):
        kw = {k: v for k, v in spec.items() if k not in ("name", "kind", "group")}
        sim = simulate_raw(spec["kind"], detector, **kw)
        write_raw(sim, directory / spec["name"], format, overwrite=overwrite)
        tr = sim.truth
        rec = {"name": spec["name"], "kind": tr["kind"],
               "imagetyp": sim.header["IMAGETYP"], "exptime": tr["exptime"],
               "filter": sim.header["FILTER"], "object": sim.header["OBJECT"],
               "date_obs": sim.header["DATE-OBS"], "seed": tr["seed"],
               "group": spec.get("group"), "bias_offset": tr["bias_offset"],
               "n_cosmics": tr["n_cosmics"], "n_crpix": int(np.count_nonzero(tr["crmask"])),
               "truth": {}}
        if spec.get("extra_crcharge") is not None:
            rec["n_double_hit_px"] = int(np.count_nonzero(
                tr["crmask"] & (spec["extra_crcharge"] > 0)))
        if "dither" in tr:
            rec["dither"] = list(tr["dither"])
        if "lamp_scale" in tr:
            rec["lamp_scale"] = tr["lamp_scale"]
        if tr["kind"] in ("dark", "science"):
            rel = f"crmask/{spec['name'].split('.')[0]}.npz"
            with atomic_open(truth_dir / rel, overwrite=True) as fh:
                np.savez_compressed(fh, crmask=tr["crmask"])
            rec["truth"]["crmask"] = rel
        return rec

    if workers > 1:
        with ThreadPoolExecutor(workers) as ex:
            records = list(ex.map(one, specs))
    else:
        records = [one(s) for s in specs]

    # -- detector and group truth ---------------------------------------------
    arrays = {"bias": bias_model(detector), "dark_current": dark_current_map(detector),
              "gain": np.float64(detector.gain), "readnoise": np.float64(detector.readnoise)}
    for f in filters:
        arrays[f"flat_{f}"] = flat_response(detector, f)
    with atomic_open(truth_dir / "detector.npz", overwrite=True) as fh:
        np.savez(fh, **arrays)
    for grp in groups:
        if "double_hits" in grp:
            dh = grp["double_hits"]
            charge = dh.pop("_charge")
            masks = [m for m in (manifest_mask(truth_dir, records, n) for n in dh["members"])]
            # the double-hit truth: pixels a double hit made a true CR pixel in both
            dh["n_px"] = int(np.count_nonzero((charge > 0) & masks[0] & masks[1]))
            with atomic_open(truth_dir / dh["mask"], overwrite=True) as fh:
                np.savez_compressed(fh, mask=(charge > 0) & masks[0] & masks[1])
        st = grp.pop("_stars")
        with atomic_open(truth_dir / grp["stars"], overwrite=True) as fh:
            np.savez(fh, **st.to_arrays())

    manifest = NightManifest(
        directory=str(directory), truth_dir=str(truth_dir), seed=seed,
        detector=detector.to_dict(), files=records, groups=groups,
        truth={"manifest": MANIFEST_NAME, "detector": "detector.npz"})
    manifest.elapsed_s = round(time.perf_counter() - t_start, 3)
    with atomic_open(truth_dir / MANIFEST_NAME, overwrite=True, mode="w") as fh:
        fh.write(manifest.to_json())
    return manifest


def manifest_mask(truth_dir, records, name):
    """The true CR mask of file ``name`` from the records being written."""
    rec = next(r for r in records if r["name"] == name)
    with np.load(Path(truth_dir) / rec["truth"]["crmask"]) as z:
        return z["crmask"]


# ---------------------------------------------------------------------------
# damaged copies, for tests of the error handling


def _damaged_path(path, out, suffix):
    path = Path(path)
    out = path.with_name(f"{path.stem}_{suffix}{path.suffix}") if out is None else Path(out)
    if out.resolve() == path.resolve():
        raise ValueError(f"refusing to damage {path} in place; give another out")
    return out


def truncate(path, out=None, *, fraction=0.5, overwrite=False) -> Path:
    """Copy ``path`` cut to ``fraction`` of its bytes (mid-data for the
    defaults), to ``out`` (default ``<stem>_truncated.fits`` next to it)."""
    out = _damaged_path(path, out, "truncated")
    data = Path(path).read_bytes()
    n = int(len(data) * float(fraction))
    with atomic_open(out, overwrite=overwrite) as fh:
        fh.write(data[:n])
    return out


def drop_keyword(path, key="EXPTIME", out=None, *, overwrite=False) -> Path:
    """Copy ``path`` without header keyword ``key`` (default EXPTIME), to
    ``out`` (default ``<stem>_no<KEY>.fits``). Data are copied unscaled."""
    key = str(key).upper()
    out = _damaged_path(path, out, f"no{key.replace('-', '')}")
    with fits.open(path, do_not_scale_image_data=True, memmap=False) as hdul:
        if key not in hdul[0].header:
            raise KeyError(f"{path}: no keyword {key} to drop")
        del hdul[0].header[key]
        with atomic_open(out, overwrite=overwrite) as fh:
            hdul.writeto(fh)
    return out


def wrong_shape(path, out=None, *, shape=None, overwrite=False) -> Path:
    """Copy ``path`` with its data cut (or zero-padded) to ``shape`` (default:
    16 rows and 16 columns fewer), header sections left as they were -- so
    DATASEC/BIASSEC no longer fit and the frame differs from its siblings.
    Written to ``out`` (default ``<stem>_wrongshape.fits``)."""
    out = _damaged_path(path, out, "wrongshape")
    with fits.open(path, memmap=False) as hdul:
        data = hdul[0].data                      # physical values (uint16)
        hdr = hdul[0].header.copy()
    if shape is None:
        shape = (max(data.shape[0] - 16, 1), max(data.shape[1] - 16, 1))
    shape = tuple(int(v) for v in shape)
    new = np.zeros(shape, dtype=data.dtype)
    ny, nx = min(shape[0], data.shape[0]), min(shape[1], data.shape[1])
    new[:ny, :nx] = data[:ny, :nx]
    for key in ("BZERO", "BSCALE"):
        hdr.remove(key, ignore_missing=True)
    hdu = fits.PrimaryHDU(data=new, header=hdr)  # uint16 -> int16 + BZERO again
    with atomic_open(out, overwrite=overwrite) as fh:
        hdu.writeto(fh)
    return out


#: ``damage.truncate(path)``, ``damage.drop_keyword(path, key)``,
#: ``damage.wrong_shape(path)``: broken copies of a frame.
damage = types.SimpleNamespace(truncate=truncate, drop_keyword=drop_keyword,
                               wrong_shape=wrong_shape)
