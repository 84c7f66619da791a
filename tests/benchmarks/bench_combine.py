"""Stack combination: crdask.combine vs ccdproc.combine vs a plain numpy baseline.

Run as ``python tests/benchmarks/bench_combine.py [--quick]``. Writes 100
flat-like frames (about 20000 ADU, Poisson-like noise, a vignetting pattern,
frame-to-frame level changes and cosmic rays) as 2048x2048 uint16 FITS
(int16 + BZERO = 32768, what cameras write) to a temporary directory, then
combines the first 30 and all 100 with

* ``crdask``: ``combine(open_stack(paths), ...)`` -- files read lazily, strip by strip
  (:func:`crdask.io.raw.open_lazy`), all cores (Dask threads);
* ``ccdproc``: ``ccdproc.combine(paths, ...)`` with its default ``mem_limit``;
* ``numpy``: every frame read with ``astropy.io.fits.getdata`` into one
  in-memory float32 stack, then ``np.median(axis=0)`` or
  ``astropy.stats.sigma_clip(axis=0)`` + masked mean.

for two jobs: ``sigma`` = average with sigma clipping (median centre, std,
3/3 sigma, one iteration -- what ccdproc.combine does, and the same for all
three) and ``median`` = plain median. Every run is a fresh subprocess that
imports and warms up (numba cache) first, resets its peak-RSS counter
(``/proc/self/clear_refs``), then times the whole job from file names to
result in memory, and reports wall time and peak RSS (``VmHWM``, the whole
process; ``ru_maxrss`` if the reset is not possible). Tools are alternated
within each round and the order is reversed every other round (``--repeats``
rounds, default 2; figures are medians). Every tool gets the same warm-up (the
same job on the first three frames, in the same process, before the clock
starts) and the same number of rounds; ``--no-ccdproc`` leaves ccdproc out.

Targets (issue): crdask >= 10x faster than ccdproc, faster than numpy, peak
memory <= 1.5 GB for 30 and 100 frames. ``--quick``: 512x512 frames.
Prints readable lines and one final ``JSON {...}`` line.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _benchcommon import emit_json, machine, median, print_machine, reset_peak, status_kb  # noqa: E402

TOOLS = ("crdask", "numpy", "ccdproc")
JOBS = ("sigma", "median")
TARGET_PEAK_MB = 1536
SIGMA_KW = dict(sigma_clip=True, sigma_clip_low_thresh=3, sigma_clip_high_thresh=3,
                sigma_clip_func="median", sigma_clip_dev_func="std")


# ---------------------------------------------------------------------------
# Data.


def write_frames(directory, n, shape, seed=1):
    """``n`` flat-like uint16 frames as FITS files; returns their paths."""
    from astropy.io import fits
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    r2 = ((yy - ny / 2) ** 2 + (xx - nx / 2) ** 2) / (0.5 * max(ny, nx)) ** 2
    pattern = (1 - 0.15 * r2).astype(np.float32)           # vignetting
    pattern *= (1 + 0.01 * rng.standard_normal(shape, np.float32))  # pixel response
    paths = []
    for i in range(n):
        level = 20000 * (1 + 0.02 * rng.standard_normal())
        img = level * pattern
        img += np.sqrt(img) * rng.standard_normal(shape, np.float32)
        hits = rng.integers(0, ny * nx, size=ny * nx // 4000)  # cosmic rays
        img.reshape(-1)[hits] += rng.uniform(500, 30000, hits.size).astype(np.float32)
        data = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
        path = os.path.join(directory, f"flat_{i:03d}.fits")
        hdu = fits.PrimaryHDU(data)         # stored as int16 + BZERO = 32768
        hdu.header["BUNIT"] = "adu"
        hdu.writeto(path, overwrite=True)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# Child process: one tool, one job.


_status_kb, _reset_peak = status_kb, reset_peak  # shared helpers in _benchcommon


def _run_crdask(paths, job):
    import dask
    from crdask.calib.combine import combine
    from crdask.io.raw import open_stack
    kw = dict(SIGMA_KW) if job == "sigma" else {}
    method = "average" if job == "sigma" else "median"

    def run(p):
        res = combine(open_stack(p), method=method, **kw)
        return dask.compute(res.data, res.count, scheduler="threads")[0]
    return run, lambda: run(paths[:3])


def _run_ccdproc(paths, job):
    import ccdproc
    kw = dict(SIGMA_KW) if job == "sigma" else {}
    method = "average" if job == "sigma" else "median"

    def run(p):
        ccd = ccdproc.combine(list(p), method=method, unit="adu", **kw)
        return np.where(ccd.mask, np.nan, ccd.data) if ccd.mask is not None else ccd.data
    return run, lambda: run(paths[:3])


def _run_numpy(paths, job):
    from astropy.io import fits
    from astropy.stats import sigma_clip

    def run(p):
        first = fits.getdata(p[0])
        stack = np.empty((len(p),) + first.shape, np.float32)
        for i, path in enumerate(p):
            stack[i] = fits.getdata(path)
        if job == "median":
            return np.median(stack, axis=0)
        clipped = sigma_clip(stack, sigma_lower=3, sigma_upper=3, maxiters=1,
                             cenfunc="median", stdfunc="std", axis=0)
        return clipped.mean(axis=0).filled(np.nan)
    return run, lambda: run(paths[:3])


def child(tool, job, listfile, outfile):
    import resource
    import warnings
    warnings.simplefilter("ignore")
    with open(listfile) as fh:
        paths = json.load(fh)
    make = {"crdask": _run_crdask, "ccdproc": _run_ccdproc, "numpy": _run_numpy}[tool]
    run, warm = make(paths, job)
    warm()  # every tool: the same job on three frames, so imports and caches are paid
    reset = _reset_peak()
    base = _status_kb("VmRSS")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = run(paths)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    peak = _status_kb("VmHWM") if reset else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(outfile, np.asarray(result, np.float32))
    print("RESULT " + json.dumps({"tool": tool, "job": job, "n": len(paths), "seconds": dt,
                                  "cpu_seconds": cpu,
                                  "peak_kb": peak, "baseline_kb": base, "hwm_reset": reset,
                                  "ru_maxrss_kb": maxrss}), flush=True)


def run_child(tool, job, paths, workdir, timeout):
    listfile = os.path.join(workdir, f"list_{len(paths)}.json")
    with open(listfile, "w") as fh:
        json.dump(paths, fh)
    outfile = os.path.join(workdir, f"out_{tool}_{job}_{len(paths)}.npy")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", tool, job, listfile,
           outfile]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            rec = json.loads(line[7:])
            rec["output"] = outfile
            return rec
    raise RuntimeError(f"{tool}/{job} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------
# Parent.


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512x512 frames")
    ap.add_argument("--size", type=int, default=None, help="frame side (default 2048)")
    ap.add_argument("--nframes", default="30,100", help="comma-separated stack sizes")
    ap.add_argument("--jobs", default=",".join(JOBS), help="sigma,median")
    ap.add_argument("--repeats", type=int, default=2,
                    help="alternating rounds of every tool (default 2)")
    ap.add_argument("--no-ccdproc", action="store_true", help="skip ccdproc")
    ap.add_argument("--data-dir", default=None,
                    help="reuse/keep the FITS files here (default: a temporary dir)")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args(argv)
    size = args.size or (512 if args.quick else 2048)
    nframes = [int(v) for v in args.nframes.split(",")]
    jobs = [j for j in args.jobs.split(",") if j]
    info = machine()
    print_machine(info)

    tmp = tempfile.mkdtemp(prefix="bench_combine_")
    datadir = args.data_dir or tmp
    os.makedirs(datadir, exist_ok=True)
    try:
        nmax = max(nframes)
        want = [os.path.join(datadir, f"flat_{i:03d}.fits") for i in range(nmax)]
        from astropy.io import fits
        if not all(os.path.exists(p) for p in want) or \
                fits.getheader(want[0])["NAXIS1"] != size:
            t0 = time.perf_counter()
            write_frames(datadir, nmax, (size, size))
            print(f"wrote {nmax} frames {size}x{size} uint16 (BZERO=32768) to {datadir} "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
        results = []
        for n in nframes:
            paths = want[:n]
            for job in jobs:
                runs = {t: [] for t in TOOLS}
                tools = ["crdask", "numpy"] + ([] if args.no_ccdproc else ["ccdproc"])
                for r in range(args.repeats):
                    order = tools if r % 2 == 0 else tools[::-1]
                    for tool in order:
                        rec = run_child(tool, job, paths, tmp, args.timeout)
                        runs[tool].append(rec)
                        print(f"  {n:3d} frames {job:6s} {tool:7s} {rec['seconds']:8.2f} s  "
                              f"(cpu {rec['cpu_seconds']:7.2f} s)  "
                              f"peak {rec['peak_kb'] / 1024:7.0f} MB", flush=True)
                results.append(summarise(n, job, runs))
        print_summary(results, size)
        emit_json({"benchmark": "combine", "size": size, "machine": info,
                   "target_peak_mb": TARGET_PEAK_MB, "results": results})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarise(n, job, runs):
    out = {"n": n, "job": job}
    for tool, recs in runs.items():
        if not recs:
            continue
        out[tool] = {"seconds": median([r["seconds"] for r in recs]),
                     "cpu_seconds": median([r["cpu_seconds"] for r in recs]),
                     "peak_mb": median([r["peak_kb"] for r in recs]) / 1024,
                     "runs": [round(r["seconds"], 3) for r in recs]}
    ref = np.load(runs["crdask"][0]["output"])
    for tool in ("numpy", "ccdproc"):
        if runs[tool]:
            other = np.load(runs[tool][0]["output"])
            ok = np.isfinite(ref) & np.isfinite(other)
            out[tool]["max_rel_diff_vs_crdask"] = float(
                np.max(np.abs(ref[ok] - other[ok]) / np.abs(other[ok]))) if ok.any() else 0.0
            out[tool]["nan_mismatch"] = int(np.count_nonzero(np.isnan(ref) != np.isnan(other)))
    cr = out["crdask"]
    if "ccdproc" in out:
        out["speedup_vs_ccdproc"] = out["ccdproc"]["seconds"] / cr["seconds"]
        out["cpu_ratio_vs_ccdproc"] = out["ccdproc"]["cpu_seconds"] / cr["cpu_seconds"]
    out["speedup_vs_numpy"] = out["numpy"]["seconds"] / cr["seconds"]
    out["cpu_ratio_vs_numpy"] = out["numpy"]["cpu_seconds"] / cr["cpu_seconds"]
    out["targets"] = {
        "x10_vs_ccdproc": (out.get("speedup_vs_ccdproc", 0) >= 10) if "ccdproc" in out
        else None,
        "faster_than_numpy": out["speedup_vs_numpy"] > 1,
        "peak_le_1_5GB": cr["peak_mb"] <= TARGET_PEAK_MB,
    }
    return out


def print_summary(results, size):
    print(f"\nsummary ({size}x{size} uint16 frames; wall time from file names to result "
          "(crdask on all cores, the others single-threaded); [cpu-time ratio]; "
          "peak = process VmHWM)")
    for r in results:
        cr = r["crdask"]
        line = (f"  {r['n']:3d} frames {r['job']:6s}: crdask {cr['seconds']:.2f} s "
                f"({cr['peak_mb']:.0f} MB)  numpy {r['numpy']['seconds']:.2f} s "
                f"({r['numpy']['peak_mb']:.0f} MB) -> {r['speedup_vs_numpy']:.1f}x "
                f"[{r['cpu_ratio_vs_numpy']:.1f}x]")
        if "ccdproc" in r:
            line += (f"  ccdproc {r['ccdproc']['seconds']:.1f} s "
                     f"({r['ccdproc']['peak_mb']:.0f} MB) -> {r['speedup_vs_ccdproc']:.1f}x "
                     f"[{r['cpu_ratio_vs_ccdproc']:.1f}x]")
        t = r["targets"]
        line += "  targets: " + ", ".join(f"{k}={'ok' if v else ('-' if v is None else 'MISSED')}"
                                         for k, v in t.items())
        print(line)
        for tool in ("numpy", "ccdproc"):
            if tool in r:
                print(f"      {tool} vs crdask: max rel diff "
                      f"{r[tool]['max_rel_diff_vs_crdask']:.2e}, NaN mismatches "
                      f"{r[tool]['nan_mismatch']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
