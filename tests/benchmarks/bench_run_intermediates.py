"""Benchmark: ``crdask run`` with Zarr intermediates on vs off.

Run as ``python tests/benchmarks/bench_run_intermediates.py [--quick]``.
Simulates one night once (as ``bench_night.py``: 10 biases, 5 darks each at
60 and 300 s, 7 flats in each of 2 filters; by default 8 science frames of
2048x2048, ``--quick``: 6 of 1024x1024), then runs
:func:`crdask.pipeline.night.run_night` (default steps, default LocalCluster)
with ``execution.intermediates: true`` and ``false``, alternating, each in a
fresh subprocess writing to a fresh output directory (deleted afterwards,
untimed). ``--repeats`` rounds (default 3), the order swapped every round.

Prints each run (time, CPU, peak RSS of the process tree, phases), the median
times, the ratio on/off (target in the issue: <= 1.2x) and one ``JSON {...}``
line. Numba's on-disk cache is warmed first by an untimed run on a tiny night.

    python tests/benchmarks/bench_run_intermediates.py [--quick] [--size N]
        [--science N] [--repeats N] [--data-dir DIR]
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _benchcommon as bc  # noqa: E402
import bench_night as bn  # noqa: E402

TARGET_RATIO = 1.2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 frames, 6 science frames")
    ap.add_argument("--size", type=int, default=None, help="frame side (default 2048)")
    ap.add_argument("--science", type=int, default=None, help="science frames (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (each: on and off)")
    ap.add_argument("--data-dir", default=None,
                    help="keep/reuse the simulated night here (default: temporary)")
    ap.add_argument("--no-warm", action="store_true", help="skip the numba warm-up run")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args(argv)
    size = args.size or (1024 if args.quick else 2048)
    n_sci = args.science or (6 if args.quick else 8)

    info = bc.machine()
    bc.print_machine(info)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    tmp = tempfile.mkdtemp(prefix="bench_run_intermediates_")
    data_dir = args.data_dir or tmp
    raw = os.path.join(data_dir, "raw")
    truth = os.path.join(data_dir, "truth")
    try:
        manifest, sim_s, reused = bn.simulate(raw, truth, size, n_sci)
        print(f"night: {bn.describe(manifest)} frames of {size}x{size}; "
              + ("reused" if reused else f"simulated in {sim_s:.1f} s"), flush=True)
        if not args.no_warm:
            print(f"numba cache warm-up (tiny night): {bn.warm_numba(tmp):.1f} s", flush=True)
        runs = {"on": [], "off": []}
        for r in range(args.repeats):
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                out = os.path.join(tmp, f"out_{mode}_{r}")
                res = bn.run_child("crdask", raw, truth, out, tmp, timeout=args.timeout,
                                   intermediates=(mode == "on"))
                shutil.rmtree(out, ignore_errors=True)
                runs[mode].append(res)
                ph = ", ".join(f"{k} {v:.1f}" for k, v in res["phases"].items()
                               if v is not None)
                print(f"  round {r + 1} intermediates {mode:3s} {res['seconds']:7.1f} s  "
                      f"cpu {res['cpu_seconds']:6.1f} s  peak {res['peak_tree_mb']:.0f} MB  "
                      f"load {res['load_before']:.1f}->{res['load_after']:.1f}  "
                      f"[{ph}] exit {res['exit_code']}", flush=True)
        on = bc.median([x["seconds"] for x in runs["on"]])
        off = bc.median([x["seconds"] for x in runs["off"]])
        ratio = on / off
        # per-round ratios (neighbours in time share the machine's load)
        pairs = [a["seconds"] / b["seconds"] for a, b in zip(runs["on"], runs["off"])]
        phase_med = {mode: {k: bc.median([x["phases"][k] for x in rs
                                          if x["phases"].get(k) is not None])
                            for k in rs[0]["phases"]} for mode, rs in runs.items()}
        print(f"\nsummary ({n_sci} science frames {size}x{size}; medians of {args.repeats})")
        for mode, t in (("on", on), ("off", off)):
            print(f"  intermediates {mode:3s} {t:7.1f} s  (runs "
                  f"{[round(x['seconds'], 1) for x in runs[mode]]})  peak "
                  f"{max(x['peak_tree_mb'] for x in runs[mode]):.0f} MB  phases "
                  + ", ".join(f"{k} {v:.1f}" for k, v in phase_med[mode].items()))
        print(f"  on/off = {ratio:.3f}x  (per round {[round(p, 3) for p in pairs]}; "
              f"target <= {TARGET_RATIO}x: {'ok' if ratio <= TARGET_RATIO else 'MISSED'})")
        print(f"  load average at end: {os.getloadavg()}")
        bc.emit_json({"benchmark": "run_intermediates", "size": size, "science_frames": n_sci,
                      "machine": info, "loadavg_end": os.getloadavg(),
                      "seconds_on": on, "seconds_off": off, "ratio": ratio,
                      "ratio_per_round": pairs, "target_ratio": TARGET_RATIO,
                      "target_met": ratio <= TARGET_RATIO, "phases": phase_med,
                      "runs": {m: [bn._slim(x) for x in v] for m, v in runs.items()}})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
