"""Benchmark: a whole night -- ``crdask run`` vs a sequential ccdproc + astroscrappy script.

Run as ``python tests/benchmarks/bench_night.py [--quick]``. Simulates one
night once (:func:`crdask.simulate.write_night` into a temporary directory;
default = the issue's night: 10 biases, 5 darks each at 60 and 300 s, 7 flats
in each of 2 filters, 20 science frames of 2048x2048 with a 32-column
overscan; ``--quick``: 1024x1024 and 8 science frames), then reduces it three
ways, each in a fresh subprocess, alternating their order round by round:

* ``crdask``: :func:`crdask.pipeline.night.run_night` with a workflow naming
  the raw directory and a fresh output directory (default steps:
  masters, calibrate, cosmics ``lacosmic``; default execution: its own
  LocalCluster sized to the machine; no calibrated frames kept in the Zarr
  intermediates, ``execution.intermediates``' default). Timed from the
  call to its return (cluster start-up, catalogue, masters, every frame
  and the report with previews all included; no truth in the workflow, so
  no scoring inside the timed run, as for the baseline). The run's log
  lines are time-stamped to split the time into phases.
* ``baseline``: what an astronomer's script does, in one process:
  ``ccdproc.ImageFileCollection`` to find the frames; every frame
  ``subtract_overscan`` (BIASSEC, median) + ``trim_image`` (DATASEC) +
  ``gain_correct``; ``ccdproc.combine`` (average, 3-sigma clip: std for the
  bias, mad_std for darks and flats as crdask does) for the master bias, the
  dark current (bias-subtracted darks scaled to 1 s) and a flat per filter
  (bias- and dark-subtracted, scaled by the inverse median, normalised to
  unit median in the central half, as crdask); each science frame through ``ccd_process`` (overscan, trim,
  deviation from gain and read noise, gain, bias, dark scaled by EXPTIME)
  and ``flat_correct``; ``astroscrappy.detect_cosmics`` (gain 1, read noise
  from the header, satlevel inf, the other parameters = crdask's defaults);
  the masters and each result written as FITS with ``CCDData.write`` (data,
  uncertainty, mask). astroscrappy runs with its default OpenMP threads.
* ``floor``: the I/O floor -- only reading every input (``fits.open``,
  full data) and writing every output at the sizes crdask writes them
  (science: float32 SCI + float32 UNCERT + uint8 MASK; masters: float32 data
  + float32 VARIANCE + uint16 NFRAMES, float32 bad-pixel mask), each output
  written the way crdask must write it: atomically and durably (a temporary
  file, synced, renamed: :func:`crdask.io.fits.write_fits_atomic`), so a
  machine that crashes keeps whole files.
* ``floor-cached``: the same with plain ``writeto`` into the page cache (not
  synced: what a crash can lose), printed beside it for comparison.

Each output directory is deleted (untimed) after its run, and every
contestant starts after an untimed ``os.sync()``: no contestant pays for
the write-back of another's outputs (the baseline and ``floor-cached``
leave about 1 GB in the page cache, not yet on disk). Peak memory is the
largest sum of RSS over the contestant's process tree (its process and any
worker processes), sampled every 0.1 s, plus the contestant process' own
``VmHWM``. CPU seconds are user + system of the process and its reaped
children. CR detection (recall, false positives, 1-px tolerance as in the
run report) is scored against the simulated truth from the written masks
of each contestant's first round, untimed and by the same function
(:func:`score_outputs`; crdask's ``MASK`` bits: the cosmic-ray bit only).

Prints each time, baseline/crdask (issue target: >= 10x on a 2-core machine),
crdask/floor (target <= 5x), peak memory, where crdask's time went, and one ``JSON {...}``
line. Every contestant gets the same warm-up, an untimed run on a tiny night
(for crdask it fills numba's on-disk cache; for the others it is the same
page-cache and start-up treatment), and the same number of alternating rounds
(``--repeats``, default 2).

crdask runs with the workflow's defaults (its local cluster: one threaded
worker in the crdask process). ``--processes`` adds a fourth contestant,
``crdask-processes``: the same ``run_night`` with ``execution.processes:
true`` (the local cluster's workers as processes), in the same rotation.

    python tests/benchmarks/bench_night.py [--quick] [--size N] [--science N]
        [--repeats N] [--baseline-repeats N] [--data-dir DIR] [--keep] [--processes]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _benchcommon as bc  # noqa: E402

TARGET_SPEEDUP = 10.0      # issue: baseline/crdask >= 10
TARGET_FLOOR = 5.0         # issue: crdask/floor <= 5
CONTESTANTS = ("crdask", "baseline", "floor", "floor-cached")
#: ``--processes``: crdask once more with ``execution.processes: true`` (its
#: local cluster's workers as processes).
PROCESSES = "crdask-processes"


# ---------------------------------------------------------------------------
# The night.


def night_kwargs(size, n_science):
    return dict(shape=(size, size), n_bias=10, dark_times=(60, 300), n_dark=5,
                filters=("V", "R"), n_flat=7, n_science=n_science, seed=0)


def simulate(raw_dir, truth_dir, size, n_science):
    """Write the night (or reuse one already there with the same recipe)."""
    from crdask.simulate.night import NightManifest, write_night
    recipe = {"size": size, "n_science": n_science, **night_kwargs(size, n_science)}
    recipe = json.loads(json.dumps(recipe))
    stamp = os.path.join(truth_dir, "bench_recipe.json")
    if os.path.exists(stamp):
        with open(stamp) as fh:
            if json.load(fh) == recipe:
                return NightManifest.load(truth_dir), 0.0, True
    t0 = time.perf_counter()
    m = write_night(raw_dir, truth_dir=truth_dir, overwrite=True,
                    **night_kwargs(size, n_science))
    dt = time.perf_counter() - t0
    with open(stamp, "w") as fh:
        json.dump(recipe, fh)
    return m, dt, False


def describe(manifest):
    kinds = {}
    for r in manifest.files:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    return kinds


# ---------------------------------------------------------------------------
# Memory and CPU of a child and its process tree.


class TreeSampler:
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval=0.1):
        import psutil
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_single = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        import psutil
        total, single, n = 0, 0, 0
        procs = [self.proc]
        try:
            procs += self.proc.children(recursive=True)
        except psutil.Error:
            pass
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            single = max(single, rss)
            n += 1
        self.peak = max(self.peak, total)
        self.peak_single = max(self.peak_single, single)
        self.peak_procs = max(self.peak_procs, n)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._sample()
        self._stop.set()
        self._t.join()


def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpu_seconds():
    import resource
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ---------------------------------------------------------------------------
# Contestants (run inside a child process).


def run_crdask(raw, truth, out, processes=None, **_):
    """``run_night`` on the raw directory (execution at the workflow's
    defaults, or ``processes``); returns timing details."""
    from crdask.pipeline.night import run_night
    wf = {"version": 1, "inputs": {"directory": raw}, "output": out,
          "execution": {} if processes is None else {"processes": bool(processes)}}
    marks = []
    t0 = time.perf_counter()

    def log(msg):
        marks.append((time.perf_counter() - t0, str(msg)))

    res = run_night(wf, log=log)
    seconds = time.perf_counter() - t0
    rec = res.record
    sci = [f for f in rec["frames"] if f.get("type") == "science"]
    frame_marks = [t for t, m in marks if m.startswith("[")]
    t_cluster = next((t for t, m in marks if "dashboard" in m), None)
    t_masters = next((t for t, m in marks if "masters built" in m or "masters unchanged" in m),
                     None)
    phases = {
        "startup_catalogue_cluster": t_cluster,
        "masters": (t_masters - t_cluster) if t_masters is not None and t_cluster else None,
        "science_frames": (frame_marks[-1] - t_masters) if frame_marks and t_masters else None,
        "report_close": (seconds - frame_marks[-1]) if frame_marks else None,
    }
    return {"seconds": seconds, "record_seconds": rec["seconds"], "exit_code": res.exit_code,
            "phases": phases, "scheduler": rec["scheduler"],
            "frames_done": sum(f["status"] == "done" for f in sci),
            "frame_seconds": [f.get("seconds") for f in sci],
            "failures": rec["failures"][:3],
            "outputs": {f["file"]: f.get("output") for f in sci}}


def _lacosmic_params():
    """crdask's L.A.Cosmic defaults (workflow ``steps.cosmics.params``)."""
    from crdask.cosmic.lacosmic import PARAMS
    defaults = PARAMS.defaults(night=True)
    keep = ("sigclip", "sigfrac", "objlim", "niter", "sepmed", "cleantype", "fsmode",
            "psfmodel", "psffwhm", "psfsize", "psfbeta")
    return {k: defaults[k] for k in keep if k in defaults}


def run_baseline(raw, truth, out, **_):
    """The sequential ccdproc + astroscrappy reduction of the night."""
    import warnings

    import astropy.units as u
    import astroscrappy
    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import mad_std

    warnings.simplefilter("ignore")
    os.makedirs(out, exist_ok=True)
    clip = dict(method="average", sigma_clip=True, sigma_clip_low_thresh=3,
                sigma_clip_high_thresh=3, sigma_clip_func=np.ma.median)
    lacos = _lacosmic_params()
    phase = {"find": 0.0, "masters": 0.0, "calibrate": 0.0, "cosmics": 0.0, "write": 0.0}
    t0 = time.perf_counter()

    def prep(path):
        ccd = CCDData.read(path, unit="adu")
        h = ccd.header
        ccd = ccdproc.subtract_overscan(ccd, fits_section=h["BIASSEC"], median=True,
                                        overscan_axis=1)
        ccd = ccdproc.trim_image(ccd, fits_section=h["DATASEC"])
        return ccdproc.gain_correct(ccd, h["GAIN"] * u.electron / u.adu)

    coll = ccdproc.ImageFileCollection(raw, keywords=["imagetyp", "filter", "exptime",
                                                      "gain", "rdnoise"])

    def files(**kw):
        return list(coll.files_filtered(include_path=True, **kw))

    t = time.perf_counter()
    phase["find"] = t - t0
    # master bias
    biases = [prep(p) for p in files(imagetyp="BIAS")]
    mbias = ccdproc.combine(biases, sigma_clip_dev_func=np.ma.std, **clip)
    del biases
    # master dark current: electrons per second, kept in e- with EXPTIME = 1 s
    darks = []
    for p in files(imagetyp="DARK"):
        d = ccdproc.subtract_bias(prep(p), mbias)
        darks.append(d.multiply(1.0 / d.header["EXPTIME"]))
    mdark = ccdproc.combine(darks, sigma_clip_dev_func=mad_std, **clip)
    mdark.header["EXPTIME"] = 1.0
    del darks
    # master flat per filter
    mflats = {}
    for filt in sorted(set(coll.summary["filter"][coll.summary["imagetyp"] == "FLAT"])):
        flats = []
        for p in files(imagetyp="FLAT", filter=filt):
            f = ccdproc.subtract_bias(prep(p), mbias)
            f = ccdproc.subtract_dark(f, mdark, exposure_time="EXPTIME",
                                      exposure_unit=u.s, scale=True)
            flats.append(f)
        mf = ccdproc.combine(flats, scale=lambda a: 1.0 / np.ma.median(a),
                             sigma_clip_dev_func=mad_std, **clip)
        ny, nx = mf.shape                  # unit median over the central half, as crdask
        mflats[filt] = mf.divide(np.median(mf.data[ny // 4:ny - ny // 4, nx // 4:nx - nx // 4]))
        del flats
    tw = time.perf_counter()
    mbias.write(os.path.join(out, "master_bias.fits"), overwrite=True)
    mdark.write(os.path.join(out, "master_dark.fits"), overwrite=True)
    for filt, mf in mflats.items():
        mf.write(os.path.join(out, f"master_flat_{filt}.fits"), overwrite=True)
    phase["write"] += time.perf_counter() - tw
    phase["masters"] = time.perf_counter() - t - phase["write"]
    # science frames
    n = 0
    for p in files(imagetyp="OBJECT"):
        t = time.perf_counter()
        ccd = CCDData.read(p, unit="adu")
        h = ccd.header
        gain = h["GAIN"] * u.electron / u.adu
        rn = h["RDNOISE"] * u.electron
        ccd = ccdproc.ccd_process(ccd, oscan=h["BIASSEC"], oscan_median=True,
                                  oscan_model=None, trim=h["DATASEC"], error=True,
                                  gain=gain, readnoise=rn, master_bias=mbias,
                                  dark_frame=mdark, exposure_key="EXPTIME",
                                  exposure_unit=u.s, dark_scale=True)
        ccd = ccdproc.flat_correct(ccd, mflats[h["FILTER"]], norm_value=1.0)
        t1 = time.perf_counter()
        phase["calibrate"] += t1 - t
        crmask, clean = astroscrappy.detect_cosmics(
            np.asarray(ccd.data, np.float32), inmask=~np.isfinite(ccd.data), gain=1.0,
            readnoise=float(h["RDNOISE"]), satlevel=np.inf, **lacos)
        t2 = time.perf_counter()
        phase["cosmics"] += t2 - t1
        res = CCDData(clean, unit=ccd.unit, mask=crmask, uncertainty=ccd.uncertainty,
                      header=ccd.header)
        res.write(os.path.join(out, os.path.basename(p).replace(".fits", "_cal.fits")),
                  hdu_mask="MASK", hdu_uncertainty="UNCERT", overwrite=True)
        phase["write"] += time.perf_counter() - t2
        n += 1
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "phases": phase, "frames_done": n, "lacosmic": lacos}


def run_floor(raw, truth, out, durable=True, **_):
    """Read every input, write every output crdask writes (same sizes/dtypes;
    ``durable``: atomically and synced, as crdask writes them)."""
    from astropy.io import fits

    from crdask.io.fits import write_fits_atomic
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    names = sorted(f for f in os.listdir(raw) if f.endswith(".fits"))
    science, calib, shape, read_bytes = [], [], None, 0
    for name in names:
        with fits.open(os.path.join(raw, name), memmap=False) as hdul:
            data = hdul[0].data            # full, scaled (BZERO) data
            h = hdul[0].header
            read_bytes += data.nbytes
            if shape is None:
                from crdask.io.sections import header_section
                shape = data[header_section(h, "DATASEC", shape=data.shape).slices].shape
            (science if h["IMAGETYP"] == "OBJECT" else calib).append(
                (name, h["IMAGETYP"], h.get("FILTER")))
    filters = sorted({f for _, t, f in calib if t == "FLAT"})
    written = 0

    def write(path, arrays):
        nonlocal written
        hdus = [fits.PrimaryHDU(arrays[0])] + [fits.ImageHDU(a) for a in arrays[1:]]
        if durable:
            write_fits_atomic(fits.HDUList(hdus), path, overwrite=True)
        else:
            fits.HDUList(hdus).writeto(path, overwrite=True)
        written += sum(a.nbytes for a in arrays)

    f32 = np.zeros(shape, np.float32)
    u16 = np.zeros(shape, np.uint16)
    u8 = np.zeros(shape, np.uint8)
    for key in ["bias", "dark"] + [f"flat_{f}" for f in filters]:
        write(os.path.join(out, f"master_{key}.fits"), [f32, f32, u16])
    write(os.path.join(out, "master_bpm.fits"), [f32])
    for name, _, _ in science:
        # distinct arrays per frame, as a pipeline would hand over
        write(os.path.join(out, name.replace(".fits", "_cal.fits")),
              [f32 + np.float32(1), f32 + np.float32(2), u8 + np.uint8(1)])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "read_mb": read_bytes / 1e6, "written_mb": written / 1e6,
            "frames_read": len(names), "science": len(science)}


RUNNERS = {"crdask": run_crdask, "baseline": run_baseline, "floor": run_floor,
           "floor-cached": lambda *a, **kw: run_floor(*a, durable=False, **kw),
           PROCESSES: lambda *a, **kw: run_crdask(*a, processes=True, **kw)}


def child(kind, spec_path):
    with open(spec_path) as fh:
        spec = json.load(fh)
    # imports outside the timed region (a user's interpreter has them loaded once)
    if kind.startswith("crdask"):
        import crdask.pipeline.night  # noqa: F401
        import distributed  # noqa: F401
    elif kind == "baseline":
        import astroscrappy  # noqa: F401
        import ccdproc  # noqa: F401
    else:
        from astropy.io import fits  # noqa: F401
    reset = _reset_hwm()
    cpu0 = _cpu_seconds()
    load0 = os.getloadavg()[0]
    with TreeSampler() as s:
        res = RUNNERS[kind](spec["raw"], spec["truth"], spec["out"], **spec.get("kw", {}))
    res.update(kind=kind, cpu_seconds=_cpu_seconds() - cpu0,
               peak_tree_mb=s.peak / 2**20, peak_single_mb=s.peak_single / 2**20,
               processes=s.peak_procs,
               vmhwm_mb=(_status_kb("VmHWM") or 0) / 1024 if reset else None,
               load_before=load0, load_after=os.getloadavg()[0])
    print("RESULT " + json.dumps(res, default=str), flush=True)


def run_child(kind, raw, truth, out, workdir, timeout=7200, **kw):
    spec_path = os.path.join(workdir, f"spec_{kind}.json")
    with open(spec_path, "w") as fh:
        json.dump({"raw": raw, "truth": truth, "out": out, "kw": kw}, fh)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, spec_path]
    os.sync()   # the previous contestant's outputs reach the disk before this one starts
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def warm_up(workdir, kinds=CONTESTANTS):
    """An untimed run of every contestant on a tiny night (numba's on-disk
    cache for crdask; the same treatment for the others)."""
    from crdask.simulate.night import write_night
    raw = os.path.join(workdir, "warm_raw")
    truth = os.path.join(workdir, "warm_truth")
    write_night(raw, truth_dir=truth, shape=(256, 256), n_bias=3, dark_times=(60,), n_dark=3,
                filters=("V",), n_flat=3, n_science=2, overwrite=True)
    out = os.path.join(workdir, "warm_out")
    t0 = time.perf_counter()
    for kind in kinds:
        run_child(kind, raw, truth, out, workdir)
        shutil.rmtree(out, ignore_errors=True)
    for d in (raw, truth):
        shutil.rmtree(d, ignore_errors=True)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Scoring every contestant from its written masks (untimed, in the parent).


def score_outputs(manifest, out_dir, suffix="_cal.fits", bit=None):
    """Recall and false positives of the masks written in ``out_dir``
    (``bit``: only this bit of ``MASK`` is a cosmic ray; None: any)."""
    from astropy.io import fits

    from crdask.simulate import score
    n_true = tp = fp = n_found = frames = 0
    for rec in manifest.select("science"):
        path = os.path.join(out_dir, rec["name"].replace(".fits", suffix))
        if not os.path.exists(path):
            continue
        mask = fits.getdata(path, "MASK")
        mask = (mask & bit) != 0 if bit is not None else mask != 0
        s = score(mask, manifest.crmask(rec["name"]), tolerance=1)
        n_true += s["n_true"]
        tp += s["true_positives"]
        fp += s["false_positives"]
        n_found += s["n_found"]
        frames += 1
    return {"frames": frames, "recall": round(tp / max(n_true, 1), 4),
            "false_positives": int(fp), "n_true": int(n_true), "n_found": int(n_found)}


def compare_first(manifest, crdask_out, base_out):
    """Median |crdask - baseline| of the first science frame's cleaned data (e-),
    on pixels neither flagged, relative to the median noise."""
    from astropy.io import fits
    rec = manifest.select("science")[0]
    name = rec["name"].replace(".fits", "_cal.fits")
    with fits.open(os.path.join(crdask_out, name)) as a, \
            fits.open(os.path.join(base_out, name)) as b:
        sa, sb = a[0].data.astype(np.float64), b[0].data.astype(np.float64)
        ok = (a["MASK"].data == 0) & (b["MASK"].data == 0) & np.isfinite(sa) & np.isfinite(sb)
        noise = np.sqrt(np.median(a["UNCERT"].data[ok]))
        d = np.abs(sa - sb)[ok]
        signed = float(np.median((sa - sb)[ok]))
    return {"frame": name, "median_diff_e": signed, "median_abs_diff_e": float(np.median(d)),
            "median_abs_diff_over_noise": float(np.median(d) / noise),
            "p99_abs_diff_over_noise": float(np.percentile(d, 99) / noise)}


# ---------------------------------------------------------------------------
# Parent.


def fmt_mb(x):
    return "-" if x is None else f"{x:.0f} MB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1024x1024 frames, 8 science frames, 2 rounds")
    ap.add_argument("--size", type=int, default=None, help="frame side (default 2048)")
    ap.add_argument("--science", type=int, default=None, help="science frames (default 20)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="rounds of crdask and floor (default 2)")
    ap.add_argument("--baseline-repeats", type=int, default=None,
                    help="rounds that include the baseline (default: all of them; fewer "
                         "makes the comparison unfair and is said in the output; 0 = "
                         "crdask and the floor only, for profiling)")
    ap.add_argument("--data-dir", default=None,
                    help="keep/reuse the simulated night here (default: temporary)")
    ap.add_argument("--keep", action="store_true", help="keep the last outputs")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-up runs")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--processes", action="store_true",
                    help=f"also run {PROCESSES}: crdask with execution.processes true")
    args = ap.parse_args(argv)
    contestants = CONTESTANTS + ((PROCESSES,) if args.processes else ())
    size = args.size or (1024 if args.quick else 2048)
    n_sci = args.science or (8 if args.quick else 20)
    repeats = args.repeats or 2
    base_repeats = min(repeats, repeats if args.baseline_repeats is None
                       else max(0, args.baseline_repeats))
    if base_repeats < repeats:
        print(f"NOTE: the baseline runs {base_repeats} of {repeats} rounds "
              "(not the same number as crdask)", flush=True)

    info = bc.machine()
    bc.print_machine(info)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    tmp = tempfile.mkdtemp(prefix="bench_night_")
    data_dir = args.data_dir or tmp
    raw = os.path.join(data_dir, "raw")
    truth = os.path.join(data_dir, "truth")
    try:
        manifest, sim_s, reused = simulate(raw, truth, size, n_sci)
        kinds = describe(manifest)
        raw_mb = sum(os.path.getsize(os.path.join(raw, f)) for f in os.listdir(raw)) / 1e6
        print(f"night: {kinds} frames of {size}x{size} (+32 overscan columns), "
              f"{raw_mb:.0f} MB raw; "
              + ("reused" if reused else f"simulated in {sim_s:.1f} s"), flush=True)
        if not args.no_warm:
            kinds_warm = [k for k in contestants if k != "baseline" or base_repeats]
            print(f"warm-up of every contestant (tiny night): "
                  f"{warm_up(tmp, kinds_warm):.1f} s", flush=True)

        runs = {k: [] for k in contestants}
        kept = {}
        for r in range(repeats):
            n = len(contestants)
            order = list(contestants[r % n:] + contestants[:r % n])
            if r >= base_repeats:
                order.remove("baseline")
            for kind in order:
                out = os.path.join(tmp, f"out_{kind}_{r}")
                res = run_child(kind, raw, truth, out, tmp, timeout=args.timeout)
                runs[kind].append(res)
                extra = ""
                if kind.startswith("crdask"):
                    extra = f"  ({res['frames_done']} frames, exit {res['exit_code']})"
                print(f"  round {r + 1} {kind:14s} {res['seconds']:8.1f} s  "
                      f"cpu {res['cpu_seconds']:7.1f} s  peak {fmt_mb(res['peak_tree_mb'])} "
                      f"({res['processes']} proc)  load {res['load_before']:.1f}->"
                      f"{res['load_after']:.1f}{extra}", flush=True)
                if not kind.startswith("floor") and kind not in kept:
                    kept[kind] = out            # first outputs: scored / compared
                else:
                    shutil.rmtree(out, ignore_errors=True)

        from crdask.calib import bits
        quality = {kind: score_outputs(manifest, d, bit=None if kind == "baseline"
                                       else bits.COSMIC_RAY) for kind, d in kept.items()}
        diff = None
        if {"crdask", "baseline"} <= kept.keys():
            try:
                diff = compare_first(manifest, kept["crdask"], kept["baseline"])
            except Exception as e:  # pragma: no cover - informative only
                diff = {"error": str(e)}
        summary = summarise(runs)
        print_summary(summary, runs, quality, diff, size, n_sci)
        bc.emit_json({"benchmark": "night", "size": size, "science_frames": n_sci,
                      "frames": kinds, "machine": info, "loadavg_end": os.getloadavg(),
                      "target_speedup": TARGET_SPEEDUP,
                      "target_floor": TARGET_FLOOR, "summary": summary,
                      "quality": quality, "crdask_vs_baseline_first_frame": diff,
                      "runs": {k: [_slim(x) for x in v] for k, v in runs.items()}})
        if args.keep:
            print(f"outputs kept in {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _slim(res):
    return {k: v for k, v in res.items() if k not in ("outputs", "frame_seconds")}


def summarise(runs):
    out = {}
    for kind, recs in runs.items():
        if not recs:
            continue
        out[kind] = {"seconds": bc.median([r["seconds"] for r in recs]),
                     "runs": [round(r["seconds"], 2) for r in recs],
                     "cpu_seconds": bc.median([r["cpu_seconds"] for r in recs]),
                     "peak_tree_mb": max(r["peak_tree_mb"] for r in recs),
                     "peak_single_mb": max(r["peak_single_mb"] for r in recs)}
    c = out["crdask"]["seconds"]
    if "baseline" in out:
        out["baseline_over_crdask"] = out["baseline"]["seconds"] / c
        out["target_met"] = out["baseline_over_crdask"] >= TARGET_SPEEDUP
    if "floor" in out:
        out["crdask_over_floor"] = c / out["floor"]["seconds"]
        out["floor_target_met"] = out["crdask_over_floor"] <= TARGET_FLOOR
    if "floor-cached" in out:
        out["crdask_over_floor_cached"] = c / out["floor-cached"]["seconds"]
    if PROCESSES in out:
        t = out[PROCESSES]["seconds"]
        if "baseline" in out:
            out["baseline_over_processes"] = out["baseline"]["seconds"] / t
        if "floor" in out:
            out["processes_over_floor"] = t / out["floor"]["seconds"]
    return out


def print_summary(s, runs, quality, diff, size, n_sci):
    print(f"\nsummary ({n_sci} science frames {size}x{size}; medians; peak = max summed RSS "
          f"of the process tree)")
    for kind in CONTESTANTS + (PROCESSES,):
        if kind in s:
            k = s[kind]
            print(f"  {kind:14s} {k['seconds']:8.1f} s  (runs {k['runs']})  cpu "
                  f"{k['cpu_seconds']:.1f} s  peak {k['peak_tree_mb']:.0f} MB "
                  f"(largest process {k['peak_single_mb']:.0f} MB)")
    if "baseline_over_crdask" in s:
        print(f"  baseline/crdask = {s['baseline_over_crdask']:.2f}x  (target >= "
              f"{TARGET_SPEEDUP:g}x: {'ok' if s['target_met'] else 'MISSED'})")
    if "crdask_over_floor" in s:
        print(f"  crdask/floor    = {s['crdask_over_floor']:.2f}x  (target <= "
              f"{TARGET_FLOOR:g}x: {'ok' if s['floor_target_met'] else 'MISSED'})")
    if "crdask_over_floor_cached" in s:
        print(f"  crdask/floor-cached = {s['crdask_over_floor_cached']:.2f}x  (outputs "
              f"left in the page cache, not synced)")
    if "baseline_over_processes" in s:
        print(f"  baseline/{PROCESSES} = {s['baseline_over_processes']:.2f}x")
    if "processes_over_floor" in s:
        print(f"  {PROCESSES}/floor = {s['processes_over_floor']:.2f}x")
    cr = runs["crdask"][0]
    ph = cr["phases"]
    fs = [x for x in cr["frame_seconds"] if x is not None]
    sch = cr["scheduler"]
    print("  crdask phases (round 1): " + ", ".join(
        f"{k} {v:.1f} s" for k, v in ph.items() if v is not None)
        + f"; per-frame task {np.median(fs):.1f} s median ({sum(fs):.1f} s summed over "
          f"{sch['task_slots']} task slots on {sch['workers']} "
          f"worker(s))")
    if runs["baseline"]:
        ph = runs["baseline"][0]["phases"]
        print("  baseline phases (round 1): " + ", ".join(f"{k} {v:.1f} s"
                                                        for k, v in ph.items()))
    for kind, q in quality.items():
        if q:
            print(f"  CR detection {kind:8s}: recall {q['recall']:.4f}, false positives "
                  f"{q['false_positives']} of {q['n_found']} found ({q['n_true']} true px)")
    if diff:
        print(f"  first frame crdask vs baseline: {diff}")
    print(f"  load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
