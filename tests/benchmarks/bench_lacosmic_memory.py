"""Peak memory: crdask.lacosmic vs astroscrappy.detect_cosmics on a 4096x4096 frame.

Run as ``python tests/benchmarks/bench_lacosmic_memory.py [--quick]``. The frame
is simulated once and saved as ``.npy``; each measurement runs in a fresh
Python subprocess that loads it into memory (the input is in the baseline),
warms the tool up on a 64x64 frame (numba cache load / JIT, OpenMP pool), resets
the kernel's peak-RSS counter (``/proc/self/clear_refs``; falls back to
``ru_maxrss``), runs the tool once and reports peak RSS (``VmHWM``) minus the
baseline RSS. ``crdask-cold`` repeats crdask without the warm-up, i.e. what a
fresh process pays the first time. The tools are alternated, ``--repeats``
rounds (default 1; the figure is the median). Target: crdask's peak is not
above astroscrappy's. One final ``JSON {...}`` line holds all figures.
``--quick`` uses 2048x2048.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _benchcommon import emit_json, machine, median, print_machine, reset_peak, status_kb  # noqa: E402

TOOLS = ("astroscrappy", "crdask", "crdask-cold")


_status_kb, _reset_peak = status_kb, reset_peak  # shared helpers in _benchcommon


def child(tool, path, sepmed, kw):
    """Runs in the fresh subprocess; prints one JSON line."""
    import resource
    data = np.load(path)  # in memory, not memmapped: part of the baseline
    if tool == "astroscrappy":
        import astroscrappy
        fn = astroscrappy.detect_cosmics
    else:
        import crdask
        fn = crdask.lacosmic
    if tool != "crdask-cold":
        fn(np.ascontiguousarray(data[:64, :64]), sepmed=sepmed, **kw)
    reset = _reset_peak()
    base = _status_kb("VmRSS")
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    mask, clean = fn(data, sepmed=sepmed, **kw)
    dt = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = hwm if reset else maxrss
    print(json.dumps({"tool": tool, "sepmed": sepmed, "baseline_kb": base,
                      "peak_kb": peak, "delta_kb": peak - base, "hwm_reset": reset,
                      "ru_maxrss_kb": maxrss, "ru_maxrss_before_kb": base_maxrss,
                      "seconds": dt, "cr_pixels": int(np.count_nonzero(mask))}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2048x2048")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--child", nargs=4, metavar=("TOOL", "NPY", "SEPMED", "KWJSON"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        tool, path, sepmed, kw = args.child
        return child(tool, path, sepmed == "True", json.loads(kw))

    from crdask.simulate import simulate_frame

    size = args.size or (2048 if args.quick else 4096)
    info = machine()
    print_machine(info)
    f = simulate_frame((size, size), args.seed)
    kw = dict(gain=f.gain, readnoise=f.readnoise, satlevel=f.satlevel * f.gain)
    print(f"frame: {size}x{size} seed {args.seed} ({f.data.nbytes / 2**20:.0f} MiB float32), "
          f"gain {f.gain}, readnoise {f.readnoise}, satlevel {kw['satlevel']} e-", flush=True)
    results = {"shape": [size, size], "seed": args.seed, "repeats": args.repeats,
               "machine": info, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "frame.npy")
        np.save(path, np.ascontiguousarray(f.data, dtype=np.float32))
        del f
        for sepmed in (True, False):
            got = {t: [] for t in TOOLS}
            for i in range(args.repeats):
                order = TOOLS if i % 2 == 0 else TOOLS[::-1]
                for tool in order:
                    out = subprocess.run(
                        [sys.executable, os.path.abspath(__file__), "--child", tool, path,
                         str(sepmed), json.dumps(kw)],
                        check=True, capture_output=True, text=True)
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    got[tool].append(r)
                    print(f"sepmed={sepmed!s:5} {tool:12} peak-baseline "
                          f"{r['delta_kb'] / 1024:7.1f} MiB (baseline {r['baseline_kb'] / 1024:.0f}"
                          f" MiB, peak {r['peak_kb'] / 1024:.0f} MiB, {r['seconds']:.1f} s, "
                          f"{r['cr_pixels']} CR px"
                          f"{'' if r['hwm_reset'] else ', ru_maxrss: HWM reset unavailable'})",
                          flush=True)
            delta = {t: median([r["delta_kb"] for r in rs]) / 1024 for t, rs in got.items()}
            ratio = delta["crdask"] / delta["astroscrappy"]
            ratio_cold = delta["crdask-cold"] / delta["astroscrappy"]
            print(f"sepmed={sepmed!s:5} peak increase crdask/astroscrappy = {ratio:.2f} "
                  f"(cold {ratio_cold:.2f}); target <= 1: "
                  f"{'met' if ratio <= 1 else 'MISSED'}", flush=True)
            results["runs"][f"sepmed={sepmed}"] = {
                "delta_mib": delta, "ratio_crdask_over_astroscrappy": ratio,
                "ratio_cold_over_astroscrappy": ratio_cold, "target_met": ratio <= 1,
                "raw": got}
    emit_json(results)


if __name__ == "__main__":
    main()
