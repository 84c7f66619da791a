"""``crdask crmasks``: numina-crmasks' YAML in, numina-crmasks' products out (layer 4).

The YAML is numina's, unchanged::

    images: [a.fits, b.fits, c.fits]     # 3 or more equivalent exposures
    gain: 2.45                           # e-/ADU
    rnoise: 2.9                          # read noise, ADU
    bias: 917.0                          # ADU
    extnum: 0                            # HDU (optional)
    requirements:                        # numina's parameters (crdask.cosmic.mm_params)
      crmethod: mm_lacosmic
      mm_boundary_fit: spline
      ...

* numina's display keys (``semiwindow``, ``color_scale``, ``maxplots``,
  ``interactive``, ``verify_cr``, ``debug``) and the parameters of the
  methods crdask does not have (``pc_*``, ``dc_*``, ``nn_*``) are accepted
  and named in one warning line;
* a ``crmethod`` crdask does not have (``pycosmic``, ``deepcr``, ``conn``
  and their ``mm_`` forms) is one error naming the ones it has;
* ``gain``, ``rnoise``, ``bias`` (numina requires them) default to 1, 0, 0,
  and every ``requirements`` key numina requires has the documented default
  of :data:`crdask.cosmic.mm_params.PARAMS`; the defaults used are named in
  one line;
* a misspelt key is one error naming it and the closest valid key.

Nothing is written until the whole file is checked and every image read;
each product is written atomically. It never waits for input.

Example
-------
>>> cfg = load_config({"images": ["a.fits"] * 3, "requirements": {"crmethod": "mmcosmic",
...                    "mm_boundary_fit": "piecewise",
...                    "mm_fixed_points_in_boundary": [[0, 10], [100, 20]]}})
>>> cfg.params["crmethod"], cfg.gain, cfg.defaults_used[:2]
('mmcosmic', 1.0, ['gain', 'rnoise'])
"""

from __future__ import annotations

import difflib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

from .._version import __version__
from ..cosmic.median_minimum import median_minimum
from ..cosmic.mm_params import NUMINA_ONLY_METHODS, PARAMS
from ..cosmic.mm_stack import COMBINATIONS
from ..cosmic.params import ParamError
from ..io.fits import FitsInputError, write_fits_atomic
from ..io.raw import read_raw

__all__ = ["CrmasksConfig", "CrmasksError", "load_config", "read_images", "run_crmasks",
           "write_products", "TOP_KEYS", "DISPLAY_KEYS"]

#: Top-level keys of numina's YAML.
TOP_KEYS = ("images", "gain", "rnoise", "bias", "extnum", "requirements")
#: numina's display and interaction keys: accepted, not used.
DISPLAY_KEYS = ("semiwindow", "color_scale", "maxplots", "interactive", "verify_cr", "debug",
                "dtype")
_OTHER_PREFIXES = ("pc_", "dc_", "nn_")
_TOP_DEFAULTS = {"gain": 1.0, "rnoise": 0.0, "bias": 0.0, "extnum": 0}


class CrmasksError(ValueError):
    """A bad YAML or input: ``str(err)`` is one line naming the file and key."""


@dataclass
class CrmasksConfig:
    """A checked numina-crmasks YAML.

    images : list of str (paths).  gain : e-/ADU.  rnoise : ADU.  bias : ADU.
    extnum : HDU index.  params : complete validated method parameters.
    ignored : keys accepted but not used.  defaults_used : keys that took
    crdask's default.  source : the YAML path (or ``'<mapping>'``).
    """

    images: list
    gain: float
    rnoise: float
    bias: float
    extnum: int
    params: dict
    ignored: list = field(default_factory=list)
    defaults_used: list = field(default_factory=list)
    source: str = "<mapping>"


def _closest(name, names):
    hit = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return hit[0] if hit else None


def _number(src, key, value, minimum, strict):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or (value <= minimum if strict else value < minimum):
        raise CrmasksError(f"{src}: {key}: {value!r} is not allowed; allowed: a number "
                           f"{'>' if strict else '>='} {minimum:g}")
    return float(value)


def load_config(source, *, base_dir=None):
    """Read and check a numina-crmasks YAML (a path or a mapping).

    Returns :class:`CrmasksConfig`; raises :class:`CrmasksError` (one line:
    ``FILE: key: problem; allowed: ...``). Image paths are taken as numina
    takes them (relative to the working directory), falling back on the
    YAML's folder.
    """
    if isinstance(source, (str, os.PathLike)):
        src = str(source)
        try:
            doc = yaml.safe_load(Path(source).read_text())
        except OSError as e:
            raise CrmasksError(f"{src}: cannot read: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise CrmasksError(f"{src}: not valid YAML: {str(e).splitlines()[0]}") from None
        base_dir = Path(source).parent if base_dir is None else Path(base_dir)
    else:
        src, doc = "<mapping>", source
    if not isinstance(doc, dict):
        raise CrmasksError(f"{src}: expected a mapping with images, gain, rnoise, bias, "
                           "requirements")
    for key in doc:
        if key not in TOP_KEYS:
            near = _closest(str(key), TOP_KEYS)
            hint = f" (did you mean {near}?)" if near else ""
            raise CrmasksError(f"{src}: {key}: unknown key{hint}; allowed: {', '.join(TOP_KEYS)}")
    images = doc.get("images")
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise CrmasksError(f"{src}: images: expected a list of FITS file names")
    if len(images) < 3:
        raise CrmasksError(f"{src}: images: {len(images)} file(s); Median-Minimum needs at "
                           "least 3 equivalent exposures")
    resolved = []
    for p in images:
        q = Path(p)
        if not q.is_absolute() and not q.exists() and base_dir is not None \
                and (Path(base_dir) / q).exists():
            q = Path(base_dir) / q
        resolved.append(str(q))
    defaults_used = []
    top = {}
    for key, dflt in _TOP_DEFAULTS.items():
        if key in doc and doc[key] is not None:
            top[key] = doc[key]
        else:
            top[key] = dflt
            defaults_used.append(key)
    gain = _number(src, "gain", top["gain"], 0, True)
    rnoise = _number(src, "rnoise", top["rnoise"], 0, False)
    bias = _number(src, "bias", top["bias"], -np.inf, False) if not isinstance(
        top["bias"], (int, float)) or isinstance(top["bias"], bool) else float(top["bias"])
    extnum = top["extnum"]
    if isinstance(extnum, bool) or not isinstance(extnum, int) or extnum < 0:
        raise CrmasksError(f"{src}: extnum: {extnum!r} is not allowed; allowed: an HDU "
                           "index >= 0")
    req = doc.get("requirements") or {}
    if not isinstance(req, dict):
        raise CrmasksError(f"{src}: requirements: expected a mapping of parameters")
    method = req.get("crmethod")
    if method in NUMINA_ONLY_METHODS:
        raise CrmasksError(f"{src}: requirements.crmethod: {method!r} is a numina-crmasks "
                           "method crdask does not have; allowed: "
                           f"{', '.join(PARAMS['crmethod'].choices)}")
    ignored, values = [], {}
    for key, value in req.items():
        if key in DISPLAY_KEYS or str(key).startswith(_OTHER_PREFIXES):
            ignored.append(str(key))
        elif key in PARAMS:
            values[key] = value
        else:
            near = _closest(str(key), list(PARAMS.names) + list(DISPLAY_KEYS))
            hint = f" (did you mean {near}?)" if near else ""
            raise CrmasksError(f"{src}: requirements.{key}: unknown parameter{hint}")
    try:
        params = PARAMS.validate(values)
    except ParamError as e:
        raise CrmasksError(f"{src}: requirements.{e}") from None
    defaults_used += [n for n in PARAMS.names if n not in values]
    return CrmasksConfig(images=resolved, gain=gain, rnoise=rnoise, bias=bias, extnum=extnum,
                         params=params, ignored=ignored, defaults_used=defaults_used, source=src)


def read_images(cfg):
    """The exposures as float32 arrays (ADU), each file read read-only.
    Raises :class:`CrmasksError` naming a missing or unreadable file, or one
    whose shape differs from the first."""
    frames = []
    for p in cfg.images:
        if not Path(p).is_file():
            raise CrmasksError(f"{p}: image file not found (listed in {cfg.source})")
        try:
            fr = read_raw(p, cfg.extnum)
        except FitsInputError as e:
            raise CrmasksError(str(e).splitlines()[0]) from None
        if frames and fr.data.shape != frames[0].shape:
            raise CrmasksError(f"{p}[{cfg.extnum}]: shape {fr.data.shape} differs from "
                               f"{cfg.images[0]}'s {frames[0].shape}")
        frames.append(fr.data)
    return frames


def _history(cfg):
    lines = [f"crdask {__version__} crmasks (numina-crmasks products)",
             f"gain={cfg.gain} rnoise={cfg.rnoise} bias={cfg.bias} extnum={cfg.extnum}"]
    lines += PARAMS.history(cfg.params)
    lines += [f"input: {os.path.basename(p)}" for p in cfg.images]
    return lines


def write_products(result, cfg, output_dir, *, plots=True, overwrite=True):
    """Write numina's products of a :class:`~crdask.cosmic.median_minimum.MMResult`
    into ``output_dir``: ``crmasks.fits``, ``combined_<name>.fits`` (primary,
    ``VARIANCE``, ``MAP``), the feature tables ``mediancr_identified_<cat>.csv``
    and (``plots``) the PNGs. Returns the list of paths written."""
    from . import crmasks_products as cp

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    hist = _history(cfg)
    written = []
    uid = str(uuid.uuid4())
    prim = fits.PrimaryHDU()
    prim.header["UUID"] = uid
    for i, f in enumerate(result.flux_factor):
        prim.header[f"FLUXF{i + 1}"] = float(f)
    for k, v in cfg.params.items():
        card = f"- {k} = {v}"
        prim.header.add_history(card[:72])
    for line in hist:
        prim.header.add_history(line)
    hdus = [prim]
    for name, m in result.masks.items():
        m = np.asarray(m)
        h = fits.ImageHDU(m.astype(np.uint8), name=name)
        h.header["NPMASKED"] = int(m.sum())
        hdus.append(h)
    if result.auxclean is not None:
        hdus.append(fits.ImageHDU(np.asarray(result.auxclean, np.float32), name="AUXCLEAN"))
    rp = cfg.params["pixels_to_be_replaced_by_local_median"]
    if rp:
        cols = [fits.Column(name=n, format="K", array=[q[i] for q in rp])
                for i, n in enumerate(("X_pixel", "Y_pixel", "X_width", "Y_width"))]
        hdus.append(fits.BinTableHDU.from_columns(cols, name="RPMEDIAN"))
    def write_masks():
        path = out / "crmasks.fits"
        write_fits_atomic(fits.HDUList(hdus), path, overwrite=overwrite)
        return [path]

    def write_combination(name):
        d, v, m = result.combination(name)
        ph = fits.PrimaryHDU(np.asarray(d, np.float32))
        ph.header["BUNIT"] = ("ADU", "bias subtracted")
        ph.header.add_history(f"combination {name}; masks UUID {uid}")
        for line in hist:
            ph.header.add_history(line)
        hl = fits.HDUList([ph, fits.ImageHDU(np.asarray(v, np.float32), name="VARIANCE"),
                           fits.ImageHDU(np.asarray(m, np.int16), name="MAP")])
        path = out / f"combined_{name}.fits"
        write_fits_atomic(hl, path, overwrite=overwrite)
        return [path]

    # The plots (matplotlib, mostly holding the GIL) beside the files
    # (numpy arithmetic, byte swaps, writes and fsyncs, mostly not): on two
    # threads the plots cost little wall time. Each job writes its own files.
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as pool:
        plot_job = pool.submit(cp.write_plots, result, out, overwrite=overwrite) if plots \
            else None
        jobs = [pool.submit(write_masks)]
        jobs += [pool.submit(write_combination, name) for name in COMBINATIONS]
        jobs.append(pool.submit(cp.write_feature_tables, result, out, overwrite=overwrite))
        for j in jobs:
            written += j.result()
        if plot_job is not None:
            written += plot_job.result()
    return written


def run_crmasks(source, output_dir=".", *, plots=True, overwrite=True, num_threads=None,
                chunks=None, log=print):
    """Run Median-Minimum as numina-crmasks does, from its YAML.

    Parameters
    ----------
    source : str, path or mapping
        numina-crmasks' YAML.
    output_dir : str or path
        Where the products go (created).
    plots : bool
        Write the PNGs (cheap: 2-D histograms, not scatter plots).
    num_threads : int, optional
        Threads of each L.A.Cosmic run.
    chunks : tuple, optional
        ``(cy, cx)``: run the per-pixel work on Dask chunks of this size.
    log : callable
        Where the one-line messages go.

    Returns
    -------
    dict
        ``masks`` (name -> pixel count), ``flux_factor``, ``files``, ``seconds``.

    Raises
    ------
    CrmasksError
        A bad YAML or input file (nothing has been written).
    """
    t0 = time.perf_counter()
    cfg = load_config(source)
    if cfg.ignored:
        log(f"crdask: warning: {cfg.source}: not used by crdask (display options or other "
            f"methods): {', '.join(cfg.ignored)}")
    frames = read_images(cfg)
    if chunks is not None:
        import dask.array as da
        frames = [da.from_array(f, chunks=chunks) for f in frames]
    try:
        result = median_minimum(frames, gain=cfg.gain, rnoise=cfg.rnoise, bias=cfg.bias,
                                num_threads=num_threads, **cfg.params)
    except ParamError as e:
        raise CrmasksError(f"{cfg.source}: {e}") from None
    files = write_products(result, cfg, output_dir, plots=plots, overwrite=overwrite)
    counts = {k: int(np.asarray(v).sum()) for k, v in result.masks.items()}
    return {"masks": counts, "flux_factor": [float(f) for f in result.flux_factor],
            "files": [str(f) for f in files], "seconds": time.perf_counter() - t0,
            "ignored": cfg.ignored, "defaults_used": cfg.defaults_used}
