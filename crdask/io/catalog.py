"""The night catalogue: what each raw file is, from its headers only (layer 3).

:func:`build_catalog` reads the header of every FITS file of a night (no
pixel data; serially on a fast disk, in a thread pool when the filesystem is
slow -- see its ``max_workers``) and returns a :class:`Catalog` of
:class:`FrameInfo` records: frame type, exposure time, filter, object, shape,
binning, date, gain and read noise. :meth:`Catalog.groups` shows the
calibration groups a reduction would build from them; :meth:`Catalog.to_json`
and :meth:`Catalog.format_table` are for people and scripts.

Which header keywords mean what differs between observatories, so it is all
in a :class:`KeywordMap` (defaults cover IRAF/NOAO, ING, LT, MaxIm DL style
headers). Keywords are looked up in the image HDU's header first, then in the
primary header (multi-extension files keep instrument keywords there).

A file that cannot be read stays in the catalogue, with ``error`` set (one
line, ``"FILE[HDU]: problem"``) and ``frame_type = "other"``; it is in no
group. For plain (uncompressed) files that includes data shorter than the
header announces (one ``stat``); truncated gzip files show up only when read. A readable file with a doubtful header (e.g. a dark or flat or science
frame without an exposure time, an unknown IMAGETYP value) gets a
``warnings`` entry instead. Nothing here changes any file.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field


from .duplicates import mark_duplicates
from .exposures import ExposureGroup, exposure_groups
from .fits import FitsInputError
from .keywords import FRAME_TYPES, SCIENCE_LIKE, KeywordMap, classify_frame_type
from .keywords import binning_value as _binning
from .keywords import filter_value as _filter
from .keywords import first_value as _first
from .keywords import number_value as _number
from .keywords import text_value as _text
from .raw import check_data_size, locate_hdu, unsigned_without_bzero

__all__ = ["FRAME_TYPES", "SCIENCE_LIKE", "FITS_SUFFIXES", "KeywordMap", "FrameInfo",
           "Group", "Catalog", "build_catalog", "list_fits_files", "frame_info",
           "ExposureGroup", "exposure_groups"]

#: File names (lower-cased) a directory listing treats as FITS.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz",
                 ".fits.fz", ".fit.fz", ".fz")

@dataclass
class FrameInfo:
    """One file of the night, from its headers.

    path : str
    frame_type : one of :data:`FRAME_TYPES`
    subtype : the qualifiers of the frame-type value, lower case,
        comma-joined (``'SKY,FLAT'`` -> ``'sky'``, ``'FLAT,LAMP'`` ->
        ``'lamp'``; ``'dark'`` for a zero-second DARK catalogued as a bias),
        or None
    exptime : float, seconds, or None if missing / not a number
    filter, grism, slit, object, date_obs : str or None (values as written)
    mjd_obs : float (MJD of the start, from ``time_keys``) or None
    setup : the instrument setup, ``KeywordMap.setup_keys`` joined with
        ``"/"`` (``'g#782/Free/Free/2x2/1030x1030'``: filter / grism / slit /
        binning / ny x nx; ``-`` for a missing value); frames of different
        setups are never combined
    shape : (ny, nx) pixels, or None for an unreadable file
    binning : ``"XxY"`` (e.g. ``"1x3"``: x unbinned, 3 rows summed) or None
    gain : float e-/ADU or None; rdnoise : float e- or None
    hdu : index of the image HDU read
    error : one line ``"FILE[HDU]: problem"`` if the file could not be used
        (unreadable, or a header value that makes it unusable: GAIN <= 0,
        negative EXPTIME)
    warnings : tuple of one-line notes about doubtful headers
    """

    path: str
    frame_type: str = "other"
    exptime: float | None = None
    filter: str | None = None
    object: str | None = None
    shape: tuple | None = None
    binning: str | None = None
    date_obs: str | None = None
    gain: float | None = None
    rdnoise: float | None = None
    hdu: int | None = None
    error: str | None = None
    warnings: tuple = ()
    # added later: after the original fields, so positional use still works
    subtype: str | None = None
    grism: str | None = None
    slit: str | None = None
    setup: str | None = None
    mjd_obs: float | None = None

    @property
    def ok(self):
        """True if the headers could be read."""
        return self.error is None

    @property
    def science_like(self):
        """True for science and standard-star frames (reduced alike)."""
        return self.frame_type in SCIENCE_LIKE

    def to_dict(self):
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["warnings"] = list(self.warnings)
        return d


@dataclass
class Group:
    """Frames a reduction would combine together (e.g. one master flat).

    frame_type : "bias", "dark", "flat", "science", "standard" or "arc"
    key : dict of the values that define the group (shape as (ny, nx))
    paths : tuple of file paths, sorted
    """

    frame_type: str
    key: dict
    paths: tuple

    @property
    def count(self):
        return len(self.paths)

    def label(self):
        """``"flat filter=V shape=1024x1024 binning=1x1"``-style text."""
        def fmt(k, v):
            if k == "shape" and v is not None:
                v = f"{v[0]}x{v[1]}"
            elif k == "exptime" and v is not None:
                v = f"{v:g}s"
            return f"{k}={v if v is not None else '-'}"
        return " ".join([self.frame_type, *(fmt(k, v) for k, v in self.key.items())])

    def to_dict(self):
        key = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.key.items()}
        return {"frame_type": self.frame_type, "key": key, "count": self.count,
                "paths": list(self.paths)}


#: What each calibration group is keyed on (``setup`` includes filter,
#: grism, slit, binning and shape as ``KeywordMap.setup_keys`` says).
GROUP_KEYS = {
    "bias": ("shape", "binning"),
    "dark": ("exptime", "shape", "binning"),
    "flat": ("setup",),
    "arc": ("setup",),
    "science": ("setup", "object"),
    "standard": ("setup", "object"),
}


def _sortable(value):
    """Sort key that puts None first and never compares str with numbers."""
    if value is None:
        return (0, "")
    if isinstance(value, tuple):
        return (1, tuple(_sortable(v) for v in value))
    if isinstance(value, (int, float)):
        return (2, float(value), "")
    return (3, 0.0, str(value))


@dataclass
class Catalog:
    """The frames of a night (sorted by path) and the keyword map used."""

    frames: list
    keymap: KeywordMap = field(default_factory=KeywordMap)
    #: pairs (or more) of paths with identical bytes, each tuple sorted
    duplicates: list = field(default_factory=list)

    def exposure_groups(self, **kw):
        """:func:`exposure_groups` of this night's science-like frames
        (keyword arguments as there)."""
        return exposure_groups(self.frames, **kw)

    def __len__(self):
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    @property
    def unreadable(self):
        """Frames whose headers could not be read."""
        return [f for f in self.frames if not f.ok]

    def of_type(self, frame_type):
        """Readable frames of one type."""
        return [f for f in self.frames if f.ok and f.frame_type == frame_type]

    def science_like(self):
        """Readable science and standard-star frames (:data:`SCIENCE_LIKE`):
        the frames a reduction calibrates and cleans of cosmic rays."""
        return [f for f in self.frames if f.ok and f.science_like]

    def groups(self):
        """The calibration groups, as :class:`Group` s in a stable order:
        bias by (shape, binning); dark by (exptime, shape, binning); flat and
        arc by setup; science and standard by (setup, object). "other" and
        unusable frames are in no group."""
        out = []
        for ftype, names in GROUP_KEYS.items():
            buckets = {}
            for f in self.of_type(ftype):
                buckets.setdefault(tuple(getattr(f, n) for n in names), []).append(f.path)
            for key in sorted(buckets, key=_sortable):
                out.append(Group(ftype, dict(zip(names, key)), tuple(sorted(buckets[key]))))
        return out

    def to_dict(self):
        counts = {t: 0 for t in FRAME_TYPES}
        for f in self.frames:
            if f.ok:
                counts[f.frame_type] += 1
        return {
            "frames": [f.to_dict() for f in self.frames],
            "counts": {**counts, "unreadable": len(self.unreadable),
                       "total": len(self.frames)},
            "groups": [g.to_dict() for g in self.groups()],
            "exposure_groups": [g.to_dict() for g in self.exposure_groups()],
            "duplicates": [list(d) for d in self.duplicates],
            "unreadable": [{"path": f.path, "error": f.error} for f in self.unreadable],
        }

    def to_json(self, indent=2):
        """JSON text: frames, counts, groups, unreadable files; keys sorted,
        frames by path, so the same night always gives the same text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def format_table(self):
        """A readable text table of the frames, then the groups with counts,
        then warnings and unreadable files with their reasons."""
        names = _display_names([f.path for f in self.frames])
        head = ("file", "type", "subtype", "exptime", "object", "setup")
        rows = []
        for f, name in zip(self.frames, names):
            if not f.ok:
                rows.append((name, "SET ASIDE", "", "", "", ""))
                continue
            rows.append((name, f.frame_type, f.subtype or "-",
                         "-" if f.exptime is None else f"{f.exptime:g}",
                         f.object or "-", f.setup or "-"))
        widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
        line = "  ".join("{:<%d}" % w for w in widths)
        out = [line.format(*head).rstrip(), line.format(*("-" * w for w in widths))]
        out += [line.format(*r).rstrip() for r in rows]
        counts = self.to_dict()["counts"]
        out.append("")
        out.append(f"{counts['total']} files: " + ", ".join(
            f"{counts[t]} {t}" for t in (*FRAME_TYPES, "unreadable") if counts[t]))
        groups = self.groups()
        out.append("")
        out.append(f"groups ({len(groups)}):" if groups else "groups: none")
        out += [f"  {g.count:4d}  {g.label()}" for g in groups]
        egroups = self.exposure_groups()
        if egroups:
            out.append("")
            out.append(f"exposure groups ({len(egroups)}; same object, setup and "
                       "exposure time, consecutive in time):")
            short = dict(zip([f.path for f in self.frames], names))
            out += [f"  {g.size:4d}  {g.label}: " + " ".join(short.get(p, p) for p in g.paths)
                    for g in egroups]
        warned = [(n, f) for n, f in zip(names, self.frames) if f.ok and f.warnings]
        if warned:
            out.append("")
            out.append(f"warnings ({_n(len(warned), 'file')}):")
            out += [f"  {n}: {w}" for n, f in warned for w in f.warnings]
        if self.unreadable:
            out.append("")
            out.append(f"set aside ({_n(len(self.unreadable), 'file')}):")
            out += [f"  {f.error}" for f in self.unreadable]
        return "\n".join(out)


def _n(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _display_names(paths):
    """Paths relative to their common directory (just names for one dir)."""
    if not paths:
        return []
    dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
    base = dirs.pop() if len(dirs) == 1 else os.path.commonpath(
        [os.path.abspath(p) for p in paths])
    return [os.path.relpath(os.path.abspath(p), base) for p in paths]


# ---------------------------------------------------------------------------
# reading one file


def _frame_type(headers, km, aliases, notes):
    key, v = _first(headers, km.type_keys)
    if key is None:
        notes.append(f"no frame type keyword ({', '.join(km.type_keys)})")
        return "other", None
    ftype, subtype = classify_frame_type(v, km, aliases)
    if ftype is None:
        notes.append(f"{key} = {str(v)!r} is not a known frame type")
        return "other", None
    return ftype, subtype


def _setup(km, parts):
    def show(name):
        v = parts[name]
        if name == "shape" and v is not None:
            v = f"{v[0]}x{v[1]}"
        return "-" if v is None or v == "" else str(v)
    return "/".join(show(k) for k in km.setup_keys) if km.setup_keys else None


def frame_info(path, keymap=None, hdu=None) -> FrameInfo:
    """The :class:`FrameInfo` of one file, from its headers (the image HDU's
    merged over the primary's, :mod:`crdask.io.headers`). Never raises for
    a bad file: the problem goes into ``error`` (one line naming the file,
    HDU and keyword) or ``warnings``.

    Decisions taken here: a ``dark`` with EXPTIME 0 is a ``bias`` (subtype
    ``'dark'``); GAIN <= 0 and a negative exposure time set the frame aside;
    BITPIX = 16 data without BZERO that hold negative numbers get a warning
    (unsigned ADU stored without BZERO: saturation cannot be flagged).

    Example
    -------
    >>> frame_info("raw/EFOSC.2022-01-28T00:08:16.282.fits").subtype  # doctest: +SKIP
    'sky'
    """
    km = keymap or KeywordMap()
    return _frame_info(os.fspath(path), km, km.normalized_aliases(), hdu)


def _frame_info(path, km, aliases, hdu):
    try:
        info = locate_hdu(path, hdu)
        check_data_size(info)
    except FitsInputError as e:
        return FrameInfo(path=path, error=str(e))
    except Exception as e:  # anything astropy did not word: still one line
        msg = " ".join(str(e).split()) or type(e).__name__
        return FrameInfo(path=path, error=f"{path}: {type(e).__name__}: {msg}")
    try:
        return _from_headers(path, info, km, aliases)
    except Exception as e:  # a header no rule foresaw: one line, never a traceback
        msg = " ".join(str(e).split()) or type(e).__name__
        return FrameInfo(path=path, hdu=info.index,
                         error=f"{path}[{info.hdu}]: header not usable: {msg}")


def _from_headers(path, info, km, aliases):
    headers = (info.merged,)
    where = f"{path}[{info.hdu}]"
    notes = list(info.warnings)
    ftype, subtype = _frame_type(headers, km, aliases, notes)
    exptime = _number(headers, km.exptime_keys, "exposure time", notes)
    error = None
    if exptime is None and ftype in ("dark", "flat", *SCIENCE_LIKE):
        if not any("exposure time" in n for n in notes):
            notes.append(f"{ftype} frame without an exposure time "
                         f"({', '.join(km.exptime_keys)})")
    elif exptime is not None and exptime < 0:
        key, _ = _first(headers, km.exptime_keys)
        error = f"{where}: {key} = {exptime:g}: exposure time must be >= 0 s"
    if ftype == "dark" and exptime == 0:
        ftype, subtype = "bias", "dark"     # EFOSC2 writes its biases so
    gain = _number(headers, km.gain_keys, "gain", notes)
    if gain is not None and not gain > 0 and error is None:
        key, _ = _first(headers, km.gain_keys)
        error = f"{where}: {key} = {gain:g}: gain must be > 0 (e-/ADU)"
    rdnoise = _number(headers, km.rdnoise_keys, "read noise", notes)
    if rdnoise is not None and rdnoise < 0 and error is None:
        key, _ = _first(headers, km.rdnoise_keys)
        error = f"{where}: {key} = {rdnoise:g}: read noise must be >= 0 (e-)"
    wrapped = unsigned_without_bzero(info)
    if wrapped:
        notes.append(wrapped.split(": ", 1)[1])
    shape = tuple(int(n) for n in info.shape)
    parts = {"filter": _filter(headers, km), "grism": _text(headers, km.grism_keys),
             "slit": _text(headers, km.slit_keys), "shape": shape,
             "binning": _binning(headers, km, notes)}
    return FrameInfo(
        path=path, frame_type=ftype, subtype=subtype, exptime=exptime,
        filter=parts["filter"], grism=parts["grism"], slit=parts["slit"],
        object=_text(headers, km.object_keys), setup=_setup(km, parts),
        shape=shape, binning=parts["binning"], date_obs=_text(headers, km.date_keys),
        mjd_obs=_number(headers, km.time_keys, "MJD", notes),
        gain=gain, rdnoise=rdnoise, hdu=info.index, error=error, warnings=tuple(notes))


# ---------------------------------------------------------------------------
# the night


def list_fits_files(directory):
    """FITS files directly in ``directory`` (by :data:`FITS_SUFFIXES`, any
    case; hidden files such as unfinished atomic writes skipped), sorted."""
    out = []
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith(".") or not e.name.lower().endswith(FITS_SUFFIXES):
                continue
            if e.is_file():
                out.append(e.path)
    return sorted(out)


#: Mean seconds per file, read serially, above which :func:`build_catalog`
#: switches to threads (a slow or network filesystem).
SLOW_FILE_S = 1e-3
_PROBE_FILES = 8


def build_catalog(paths_or_dir, keymap=None, max_workers=None, *, hdu=None) -> Catalog:
    """Catalogue a night from headers only.

    Parameters
    ----------
    paths_or_dir : directory, one file, or an iterable of files
        A directory is listed with :func:`list_fits_files` (not recursive);
        a directory or file that does not exist raises ``FileNotFoundError``.
        Files of an iterable that do not exist are catalogued as unreadable.
    keymap : :class:`KeywordMap`, optional
    max_workers : int, optional
        Threads reading headers. Parsing a header is pure Python and holds the
        GIL, so on a local disk one thread is fastest (threads only add
        contention); threads pay off when opening/reading a file waits on a
        slow or network filesystem. The default (``None``) therefore reads the
        first few files serially and continues in a thread pool (the
        ``ThreadPoolExecutor`` default size) only if they took more than
        :data:`SLOW_FILE_S` each. ``1``: serial; ``n > 1``: always ``n`` threads.
    hdu : which HDU of each file (default: the first with 2-D image data).

    Returns a :class:`Catalog` with frames sorted by path (duplicates
    removed); the result never depends on ``max_workers``.
    """
    km = keymap or KeywordMap()
    aliases = km.normalized_aliases()
    if isinstance(paths_or_dir, (str, os.PathLike)):
        p = os.fspath(paths_or_dir)
        if not os.path.exists(p):   # a mistyped night is a usage error
            raise FileNotFoundError(f"{p}: no such file or directory")
        paths = list_fits_files(p) if os.path.isdir(p) else [p]
    else:
        paths = sorted({os.fspath(p) for p in paths_or_dir})
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")

    def one(p):
        return _frame_info(p, km, aliases, hdu)

    frames = []
    if max_workers is None:             # probe: is the filesystem slow?
        t0 = time.perf_counter()
        frames = [one(p) for p in paths[:_PROBE_FILES]]
        slow = (time.perf_counter() - t0) / max(len(frames), 1) > SLOW_FILE_S
        max_workers = min(32, (os.cpu_count() or 1) + 4) if slow else 1
    rest = paths[len(frames):]
    if max_workers == 1 or len(rest) <= 1:
        frames += [one(p) for p in rest]
    else:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(rest))) as pool:
            frames += list(pool.map(one, rest))
    duplicates = mark_duplicates(frames)
    return Catalog(frames=frames, keymap=km, duplicates=duplicates)
