"""Benchmark: the night catalogue (headers only) against ccdproc.

Writes a simulated night of ``--files`` small raw frames (uint16 stored as
int16 + BZERO = 32768, realistic headers) and times, in one process run and
alternating, ``crdask.io.build_catalog(dir)`` against
``ccdproc.ImageFileCollection(dir, keywords=...)`` plus its ``.summary``
table -- the usual way to look at a night's headers. ImageFileCollection is
given the same keywords crdask reads (every keyword of crdask's
:class:`~crdask.io.keywords.KeywordMap` that the night's headers hold, plus
NAXIS1/NAXIS2), not its default of tabulating every card. Both read every
file's header from the (warm) page cache; neither reads pixel data.

The night comes from ``crdask.simulate.write_night`` when it is available
(IMAGETYP, EXPTIME, FILTER, OBJECT, GAIN, RDNOISE, DATASEC, BIASSEC, CCDSUM,
DATE-OBS, ...); otherwise this script writes equivalent files itself.

Prints the median times, the ratio, the peak traced memory of one run of
each, and one ``JSON {...}`` line.

    python tests/benchmarks/bench_catalog.py [--files 500] [--shape 256]
        [--repeats 5] [--workers N] [--dir DIR]
"""

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchcommon as bc  # noqa: E402


def _own_night(directory, n_files, shape, seed=0):
    """``n_files`` raw frames: 10% bias, 10% dark (60/300 s), 20% flat (V/R/B),
    60% science in groups of 5, with the header cards a CCD camera writes."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    ny, nx = shape
    over = 16                                     # overscan columns
    kinds = (["bias"] * (n_files // 10) + ["dark"] * (n_files // 10)
             + ["flat"] * (n_files // 5))
    kinds += ["science"] * (n_files - len(kinds))
    for k, kind in enumerate(kinds):
        exptime = {"bias": 0.0, "dark": (60.0, 300.0)[k % 2], "flat": 5.0}.get(kind, 300.0)
        filt = ("V", "R", "B")[k % 3]
        level = {"flat": 20000.0, "science": 1500.0}.get(kind, 0.0)
        data = rng.normal(1000.0 + level, 8.0, (ny, nx + over))
        h = fits.Header()
        h["IMAGETYP"] = {"science": "object"}.get(kind, kind)
        h["OBSTYPE"] = kind.upper()
        h["EXPTIME"] = (exptime, "[s] exposure time")
        h["DATE-OBS"] = f"2024-03-15T{16 + k // 120:02d}:{(k // 2) % 60:02d}:{k % 60:02d}"
        h["FILTER"] = filt if kind in ("flat", "science") else "dark"
        h["OBJECT"] = f"field{k // 15:02d}" if kind == "science" else kind
        h["GAIN"], h["RDNOISE"] = (2.0, "[e-/ADU]"), (5.0, "[e-]")
        h["CCDSUM"] = "1 1"
        h["DATASEC"] = f"[1:{nx},1:{ny}]"
        h["BIASSEC"] = f"[{nx + 1}:{nx + over},1:{ny}]"
        h["TRIMSEC"] = h["DATASEC"]
        h["SATURATE"], h["INSTRUME"], h["TELESCOP"] = 65535, "SIMCAM", "SIM 1m"
        h["RA"], h["DEC"], h["AIRMASS"] = "13:29:52.7", "+47:11:43", 1.1 + k * 1e-3
        for i in range(40):                       # the usual telemetry cards
            h[f"TEMP{i:03d}"] = (round(float(rng.normal(-100, 1)), 3), "[C] sensor")
        hdu = fits.PrimaryHDU(np.clip(data, 0, 65535).astype(np.uint16), header=h)
        hdu.writeto(os.path.join(directory, f"r{k:04d}_{kind}.fits"))


def write_sim_night(directory, n_files, shape):
    """Write the night; returns a description of how."""
    try:
        from crdask.simulate import write_night
    except ImportError:
        write_night = None
    if write_night is not None:
        n_bias, n_dark, n_flat = n_files // 10, n_files // 20, n_files // 15
        filters = ("V", "R", "B")
        n_sci = n_files - n_bias - 2 * n_dark - len(filters) * n_flat
        try:
            write_night(directory, shape=shape, n_bias=n_bias, dark_times=(60, 300),
                        n_dark=n_dark, filters=filters, n_flat=n_flat, n_science=n_sci,
                        truth_dir=directory + "_truth", seed=1)
            return "crdask.simulate.write_night"
        except TypeError as e:   # a different signature: fall back, say so
            print(f"write_night({e}); writing the night here instead", flush=True)
    _own_night(directory, n_files, shape)
    return "bench_catalog._own_night"


def run_crdask(directory, workers):
    from crdask.io import build_catalog
    cat = build_catalog(directory, max_workers=workers)
    cat.groups()
    return len(cat)


def crdask_keywords(directory):
    """The header keywords crdask's catalogue looks at that this night has."""
    from dataclasses import fields

    from astropy.io import fits

    from crdask.io.keywords import KeywordMap

    km = KeywordMap()
    wanted = set()
    for f in fields(km):
        value = getattr(km, f.name)
        if f.name.endswith("_keys") and f.name != "setup_keys":
            wanted.update(value)
        elif f.name == "binning_pairs":
            wanted.update(k for pair in value for k in pair)
    first = sorted(n for n in os.listdir(directory) if n.endswith(".fits"))[0]
    header = fits.getheader(os.path.join(directory, first))
    return sorted(k for k in wanted if k in header) + ["NAXIS1", "NAXIS2"]


def run_ccdproc(directory, keywords):
    from ccdproc import ImageFileCollection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ifc = ImageFileCollection(directory, keywords=keywords)
        return len(ifc.summary)


def peak_mib(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--shape", type=int, default=256, help="frame size (square, px)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None,
                    help="build_catalog threads (default: its own default)")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args(argv)

    info = bc.machine()
    bc.print_machine(info)
    tmp = tempfile.TemporaryDirectory(prefix="bench_catalog_", dir=args.dir)
    night = os.path.join(tmp.name, "night")
    os.mkdir(night)
    t0 = time.perf_counter()
    source = write_sim_night(night, args.files, (args.shape, args.shape))
    n_files = len([n for n in os.listdir(night) if n.endswith(".fits")])
    print(f"night: {n_files} files of {args.shape}x{args.shape} from {source} "
          f"in {time.perf_counter() - t0:.1f} s ({night})", flush=True)

    keywords = crdask_keywords(night)
    print(f"ImageFileCollection keywords (those crdask reads): {', '.join(keywords)}")
    # warm-up (page cache, imports), and the same number of files both ways
    n_ours, n_theirs = run_crdask(night, args.workers), run_ccdproc(night, keywords)
    assert n_ours == n_theirs == n_files, (n_ours, n_theirs, n_files)

    times = {"crdask": [], "ccdproc": []}
    for r in range(args.repeats):
        order = ("crdask", "ccdproc") if r % 2 == 0 else ("ccdproc", "crdask")
        for who in order:
            t = time.perf_counter()
            if who == "crdask":
                run_crdask(night, args.workers)
            else:
                run_ccdproc(night, keywords)
            times[who].append(time.perf_counter() - t)
    med = {k: bc.median(v) for k, v in times.items()}
    ratio = med["ccdproc"] / med["crdask"]
    peak = {"crdask": peak_mib(lambda: run_crdask(night, args.workers)),
            "ccdproc": peak_mib(lambda: run_ccdproc(night, keywords))}
    print(f"build_catalog: {med['crdask'] * 1e3:.0f} ms "
          f"({med['crdask'] / n_files * 1e3:.2f} ms/file, peak {peak['crdask']:.1f} MiB); "
          f"ImageFileCollection+summary: {med['ccdproc'] * 1e3:.0f} ms "
          f"({med['ccdproc'] / n_files * 1e3:.2f} ms/file, peak {peak['ccdproc']:.1f} MiB); "
          f"crdask is {ratio:.1f}x faster (median of {args.repeats}, alternating)",
          flush=True)
    bc.emit_json({"benchmark": "catalog", "files": n_files, "shape": args.shape,
                  "source": source, "workers": args.workers, "repeats": args.repeats,
                  "crdask_s": times["crdask"], "ccdproc_s": times["ccdproc"],
                  "crdask_median_s": med["crdask"], "ccdproc_median_s": med["ccdproc"],
                  "speedup": ratio, "peak_mib": peak, "keywords": keywords,
                  "machine": info})
    tmp.cleanup()


if __name__ == "__main__":
    main()
