"""A simulated long-slit spectroscopic night (raw frames + truth kept apart).

:func:`simulate_longslit_night` writes what a long-slit spectrograph brings
home, with the headers typed as ESO-style instruments type them:

* biases (``IMAGETYP = 'BIAS'``);
* lamp flats (``'FLAT,LAMP'``): a halogen-like continuum with a **strong
  spectral shape along the dispersion axis** (a smooth bump, 20:1 from its
  peak to the blue end), a mild slit illumination profile along the spatial
  axis, times the detector's pixel response -- what a spectroscopic flat
  must divide out along one axis and keep along the other;
* arcs (``'WAVE,LAMP'``): narrow emission lines (Gaussian, sigma 1.2 px)
  along the dispersion axis at seeded positions, uniform along the slit;
* science frames (``'OBJECT'``), one group of equivalent exposures (same
  object, exposure time, consecutive DATE-OBS, nodded by a few pixels
  along the slit): a faint sky continuum, sky emission lines filling the
  slit, and the target's **trace** (Gaussian profile across the slit,
  sigma 2 px, slightly tilted), with cosmic rays and their truth.

Every frame carries ``DISPAXIS = 1`` (dispersion along x, NAXIS1, the IRAF
convention), ``GRISM``, ``SLIT`` and ``FILTER = 'Free'``; the detector is a
:class:`~crdask.simulate.raw.Detector` (overscan, bias structure, gain, read
noise, optionally two amplifiers). Truth (``<dir>_truth/``): ``manifest.json``
(:class:`~crdask.simulate.night.NightManifest`), ``detector.npz`` (bias,
pixel ``flat``, ``lamp_spectrum`` and ``slit_profile`` (relative),
``arc_lines`` (x positions, px) and ``arc_flux``, ``sky_lines``, trace
``trace_y0``/``trace_tilt``), ``crmask/<stem>.npz`` per science frame.

Example
-------
>>> from crdask.simulate import simulate_longslit_night
>>> m = simulate_longslit_night("ls", shape=(128, 512))     # doctest: +SKIP
>>> [r["imagetyp"] for r in m.files][:1]                    # doctest: +SKIP
['BIAS']
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_open
from .night import MANIFEST_NAME, READOUT_S, NightManifest
from .detector import Detector, bias_model, flat_response
from .raw import simulate_raw
from .writers import FORMATS, raw_name, write_raw

__all__ = ["simulate_longslit_night", "lamp_spectrum", "arc_spectrum", "science_light"]

GRISM, SLIT = "Gr#sim", "slit#1.0"


def lamp_spectrum(nx):
    """Relative lamp-flat continuum along the dispersion axis, shape (nx,),
    peak 1, 0.05 at the blue (x = 0) end."""
    x = np.arange(nx, dtype=np.float64) / max(nx - 1, 1)
    return 0.05 + 0.95 * np.exp(-0.5 * ((x - 0.6) / 0.25) ** 2)


def _lines(nx, rng, n, lo_flux, hi_flux):
    pos = np.sort(rng.uniform(8, nx - 8, n))
    flux = np.exp(rng.uniform(np.log(lo_flux), np.log(hi_flux), n))
    return pos, flux


def _line_profile(nx, pos, flux, sigma=1.2):
    x = np.arange(nx, dtype=np.float64)[:, None]
    return (flux[None, :] * np.exp(-0.5 * ((x - pos[None, :]) / sigma) ** 2)).sum(axis=1)


def arc_spectrum(nx, seed=0, n_lines=25):
    """(spectrum e-/s per pixel along x, line positions px, line fluxes)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 41]))
    pos, flux = _lines(nx, rng, n_lines, 50.0, 3000.0)
    return _line_profile(nx, pos, flux), pos, flux


def science_light(shape, seed=0, y0=None, tilt=0.01, sky=0.5, n_sky_lines=15,
                  trace_peak=40.0, sigma=2.0):
    """Science light (e-/s per pixel, shape (ny, nx)): sky continuum + sky
    lines filling the slit + a Gaussian trace centred at ``y0 + tilt * x``.
    Returns (light, sky line positions)."""
    ny, nx = shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 43]))
    pos, flux = _lines(nx, rng, n_sky_lines, 2.0, 40.0)
    sky_x = sky + _line_profile(nx, pos, flux)
    y0 = ny / 2.0 if y0 is None else float(y0)
    y = np.arange(ny, dtype=np.float64)[:, None]
    x = np.arange(nx, dtype=np.float64)[None, :]
    trace = trace_peak * lamp_spectrum(nx)[None, :] * np.exp(
        -0.5 * ((y - (y0 + tilt * x)) / sigma) ** 2)
    return sky_x[None, :] + trace, pos


def simulate_longslit_night(directory, *, shape=(256, 1024), n_bias=5, n_flat=5, n_arc=2,
                            n_science=3, science_exptime=600.0, seed=0, truth_dir=None,
                            format="single", amplifiers=1, detector=None,
                            date="2024-03-15", overwrite=False) -> NightManifest:
    """Write a long-slit night into ``directory`` and its truth apart.

    Parameters
    ----------
    directory : raw directory (created if needed).
    shape : (ny, nx) unbinned imaging area; y runs along the slit, x along
        the dispersion (``DISPAXIS = 1``).
    n_bias, n_flat, n_arc, n_science : frame counts (flats ``FLAT,LAMP``, arcs
        ``WAVE,LAMP``, science ``OBJECT``: one group, nodded along the slit).
    science_exptime : s.  seed : int >= 0 (everything follows from it).
    truth_dir : default ``<directory>_truth``.
    format : ``single``, ``mef``, ``gzip`` or ``fpack`` (see
        :mod:`crdask.simulate.writers`).  amplifiers : 1 or 2.
    detector : a :class:`~crdask.simulate.raw.Detector` (overrides ``shape``
        and ``amplifiers``).
    date : evening date for DATE-OBS (calibrations from 16:00 UTC, science
        from 20:00; 30 s readout between frames).
    overwrite : replace existing files.

    Returns :class:`~crdask.simulate.night.NightManifest` (``kind`` bias /
    flat / arc / science; ``groups`` holds the science group).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    directory = Path(directory).absolute()
    truth_dir = (directory.parent / (directory.name + "_truth") if truth_dir is None
                 else Path(truth_dir).absolute())
    if truth_dir.resolve() == directory.resolve() or \
            directory.resolve() in truth_dir.resolve().parents:
        raise ValueError(f"truth_dir {truth_dir} must be outside the raw directory")
    seed = int(seed)
    det = detector or Detector(shape=tuple(shape), seed=seed, amplifiers=int(amplifiers),
                               instrument="CRDASK-LONGSLIT")
    ny, nx = det.image_shape
    hdr = {"DISPAXIS": (1, "dispersion along NAXIS1"), "GRISM": (GRISM, "grism"),
           "SLIT": (SLIT, "slit")}
    slit = 1.0 - 0.1 * ((np.arange(ny) - ny / 2) / max(ny / 2, 1)) ** 2
    lamp = 25000.0 * det.gain / 10.0 * slit[:, None] * lamp_spectrum(nx)[None, :]
    arc1d, arc_pos, arc_flux = arc_spectrum(nx, seed)
    arc = np.broadcast_to(arc1d[None, :], (ny, nx)) * slit[:, None]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 44]))
    nods = [float(v) for v in rng.uniform(-6, 6, n_science)]
    specs = []
    for i in range(n_bias):
        specs.append(dict(name=raw_name(f"bias_{i + 1:03d}", format), kind="bias"))
    for i in range(n_flat):
        specs.append(dict(name=raw_name(f"lampflat_{i + 1:03d}", format), kind="flat",
                          exptime=10.0, light=lamp, imagetyp="FLAT,LAMP",
                          object="Lamp flat"))
    for i in range(n_arc):
        specs.append(dict(name=raw_name(f"arc_{i + 1:03d}", format), kind="arc",
                          exptime=5.0, light=arc, imagetyp="WAVE,LAMP", object="Arc"))
    members = []
    for i in range(n_science):
        light, sky_pos = science_light((ny, nx), seed, y0=ny / 2.0 + nods[i])
        name = raw_name(f"sci_target01_{i + 1:03d}", format)
        members.append(name)
        specs.append(dict(name=name, kind="science", exptime=float(science_exptime),
                          light=light, imagetyp="OBJECT", object="target01",
                          dither=(0.0, nods[i]), group="target01_01"))
    night0 = _dt.datetime.fromisoformat(str(date))
    clock = night0.replace(hour=16)
    for k, spec in enumerate(specs):
        if spec["kind"] == "science" and clock < night0.replace(hour=20):
            clock = night0.replace(hour=20)
        spec["date_obs"] = clock
        spec["seed"] = int(np.random.SeedSequence([seed, 5, k]).generate_state(1)[0]
                           & 0x7FFFFFFF)
        clock += _dt.timedelta(seconds=float(spec.get("exptime", 0.0)) + READOUT_S)
    directory.mkdir(parents=True, exist_ok=True)
    (truth_dir / "crmask").mkdir(parents=True, exist_ok=True)
    records = []
    for spec in specs:
        kw = {k: v for k, v in spec.items() if k not in ("name", "kind", "group")}
        sim = simulate_raw(spec["kind"], det, filter="Free", extra_header=hdr, **kw)
        write_raw(sim, directory / spec["name"], format, overwrite=overwrite)
        tr, h = sim.truth, sim.header
        rec = {"name": spec["name"], "kind": tr["kind"], "imagetyp": h["IMAGETYP"],
               "exptime": tr["exptime"], "filter": h["FILTER"], "object": h["OBJECT"],
               "date_obs": h["DATE-OBS"], "seed": tr["seed"], "group": spec.get("group"),
               "bias_offset": tr["bias_offset"], "n_cosmics": tr["n_cosmics"],
               "n_crpix": int(np.count_nonzero(tr["crmask"])), "truth": {}}
        if tr["kind"] == "science":
            rec["dither"] = [0.0, spec["dither"][1]]
            rel = f"crmask/{spec['name'].split('.')[0]}.npz"
            with atomic_open(truth_dir / rel, overwrite=True) as fh:
                np.savez_compressed(fh, crmask=tr["crmask"])
            rec["truth"]["crmask"] = rel
        records.append(rec)
    with atomic_open(truth_dir / "detector.npz", overwrite=True) as fh:
        np.savez(fh, bias=bias_model(det), flat=flat_response(det, "Free"),
                 lamp_spectrum=lamp_spectrum(nx), slit_profile=slit, arc_lines=arc_pos,
                 arc_flux=arc_flux, sky_lines=sky_pos if n_science else np.zeros(0),
                 trace_y0=np.array([ny / 2.0 + v for v in nods]), trace_tilt=0.01,
                 gain=det.gain, readnoise=det.readnoise)
    groups = [{"id": "target01_01", "object": "target01", "filter": "Free",
               "exptime": float(science_exptime), "members": members,
               "dithers": [[0.0, v] for v in nods]}] if members else []
    manifest = NightManifest(directory=str(directory), truth_dir=str(truth_dir), seed=seed,
                             detector=det.to_dict(), files=records, groups=groups,
                             truth={"manifest": MANIFEST_NAME, "detector": "detector.npz"})
    with atomic_open(truth_dir / MANIFEST_NAME, overwrite=True, mode="w") as fh:
        fh.write(json.dumps(manifest.to_dict(), indent=1))
    return manifest
