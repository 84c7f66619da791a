"""crdask crmasks vs numina-crmasks: the same YAML (``mm_lacosmic``), 3 x 2048x2048.

Run as ``python tests/benchmarks/bench_crmasks.py [--size N] [--repeats R]``.
Three simulated equivalent exposures (``tests/mm_sets.py``: same scene,
fresh noise, own CRs, coincident CRs in 2 of 3) are written once as FITS with
one numina YAML (``interactive: false``). Each tool runs as its console
script in a fresh subprocess, as a user runs it: ``numina-crmasks`` (which
always draws its plots; ``maxplots: 0`` spares it one PDF page per feature)
and ``crdask crmasks`` with and without ``--no-plots``. Both are warmed up
once on a 256x256 set first (imports, numba cache). The timed runs
alternate crdask (plots), numina, crdask (no plots), ``--repeats`` rounds
(median). Peak memory is each subprocess's peak RSS (``wait4``; the
process tree is that one process: ``crdask crmasks`` runs on threads, with
no worker processes, and numina-crmasks starts none either).
Prints the ratios as readable lines and one ``JSON {...}`` line; the load
average is printed with the figures.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))   # this checkout's crdask

from _benchcommon import emit_json, machine, median, print_machine  # noqa: E402
from mm_numina import jaccard, numina_script, read_masks, write_frames, write_yaml  # noqa: E402
from mm_sets import make_set  # noqa: E402

REQ = dict(crmethod="mm_lacosmic", mm_boundary_fit="spline", mm_photon_distribution="poisson",
           mm_nbinom_shape=1000, mm_synthetic="median", la_cleantype="meanmask",
           la_fsmode="median", la_psfmodel="gauss", la_psffwhm_x=2.5, la_psffwhm_y=2.5,
           la_psfsize=7, apply_flux_factor_to="original", interactive=False, maxplots=0,
           mm_seed=1)


def make_inputs(folder, size, seed):
    s = make_set(3, (size, size), seed=seed, dither=False)
    paths = write_frames(s["frames"], Path(folder) / "raw")
    return write_yaml(Path(folder) / "params.yaml", paths, s["gain"], s["rnoise"], s["bias"],
                      REQ)


def timed(cmd, cwd):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(HERE.parents[1])}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{err[-2000:]}")
    return dt, ru.ru_maxrss / 1024.0, ru.ru_utime + ru.ru_stime     # s, MiB, CPU s


def commands(yaml_path, out):
    return {
        "crdask": [sys.executable, "-m", "crdask", "crmasks", str(yaml_path), "--output-dir",
                   str(out / "crdask")],
        "numina": [numina_script(), str(yaml_path), "--output_dir", str(out / "numina"),
                   "--log-level", "WARNING"],
        "crdask_noplots": [sys.executable, "-m", "crdask", "crmasks", str(yaml_path),
                           "--output-dir", str(out / "crdask_np"), "--no-plots"],
    }


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    info = machine()
    print_machine(info)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = make_inputs(tmp / "warm", 256, 1)
        big = make_inputs(tmp / "big", args.size, 2)
        for name, cmd in commands(warm, tmp / "warm").items():
            timed(cmd, tmp)
        times = {k: [] for k in ("crdask", "numina", "crdask_noplots")}
        peaks = {k: [] for k in times}
        cpus = {k: [] for k in times}
        loads = [load()]
        for _ in range(args.repeats):
            for name, cmd in commands(big, tmp / "big").items():
                dt, mb, cs = timed(cmd, tmp)
                times[name].append(dt)
                peaks[name].append(mb)
                cpus[name].append(cs)
                loads.append(load())
                print(f"  {name}: {dt:.1f} s, CPU {cs:.1f} s, peak {mb:.0f} MiB "
                      f"(load {loads[-1]:.1f})", flush=True)
        ours = read_masks(tmp / "big" / "crdask" / "crmasks.fits")
        theirs = read_masks(tmp / "big" / "numina" / "crmasks.fits")
        jac = {k: jaccard(ours[k], theirs[k]) for k in theirs}
    t = {k: median(v) for k, v in times.items()}
    m = {k: max(v) for k, v in peaks.items()}
    c = {k: median(v) for k, v in cpus.items()}
    r_plots = t["numina"] / t["crdask"]
    r_np = t["numina"] / t["crdask_noplots"]
    print(f"crmasks 3x{args.size}^2 mm_lacosmic: crdask {t['crdask']:.1f} s with plots, "
          f"{t['crdask_noplots']:.1f} s without; numina-crmasks {t['numina']:.1f} s -> "
          f"{r_plots:.1f}x faster with plots (bar >= 10x), {r_np:.1f}x without")
    print(f"peak memory: crdask {m['crdask']:.0f} MiB (no plots {m['crdask_noplots']:.0f}), "
          f"numina-crmasks {m['numina']:.0f} MiB; load average {min(loads):.1f}-{max(loads):.1f}"
          " on a shared machine")
    # CPU time (user + system of the process) moves less with the load than
    # the wall clock on a shared machine
    print(f"CPU time: crdask {c['crdask']:.1f} s with plots, {c['crdask_noplots']:.1f} s "
          f"without; numina-crmasks {c['numina']:.1f} s -> {c['numina'] / c['crdask']:.1f}x / "
          f"{c['numina'] / c['crdask_noplots']:.1f}x less CPU")
    print("masks Jaccard crdask vs numina: " + ", ".join(f"{k} {v:.4f}" for k, v in jac.items()))
    emit_json({"bench": "crmasks", "size": args.size, "repeats": args.repeats,
               "seconds": t, "cpu_seconds": c, "ratio_plots": r_plots, "ratio_noplots": r_np,
               "peak_mib": m, "jaccard": jac, "load": [min(loads), max(loads)],
               "machine": info})


if __name__ == "__main__":
    main()
