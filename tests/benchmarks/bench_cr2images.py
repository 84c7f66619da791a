"""Speed: crdask.cr2images vs teareduce.cosmicrays.cr2images on a 2048x2048 pair.

Run as ``python tests/benchmarks/bench_cr2images.py [--quick]``. The pair is
one simulated scene (same sky and stars) with independent noise and CRs in
each exposure (as in ``tests/test_cr2images.py``). Both tools run on the same
float32 numpy arrays with their defaults (``return_masks=True``); after one
warm-up call each (numba cache load), they are alternated A/B for
``--repeats`` rounds. Prints the medians, the ratio teareduce/crdask (target
>= 20) and whether all four outputs are identical, then one ``JSON {...}``
line with every figure and the machine description.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _benchcommon import emit_json, machine, median, print_machine  # noqa: E402

TARGET = 20.0


def make_pair(shape, seed, noise=4.0):
    from crdask.simulate import simulate_frame
    scene = simulate_frame(shape, seed=seed, n_cosmics=0).clean
    rng = np.random.default_rng(seed + 1000)
    out = []
    for k in range(2):
        crs = simulate_frame(shape, seed=seed * 10 + k + 1, n_stars=0, n_saturated=0)
        out.append((scene + (crs.data - crs.clean)
                    + rng.normal(0, noise, shape)).astype(np.float32))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)

    from teareduce.cosmicrays import cr2images as tea

    import crdask

    info = machine()
    print_machine(info)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    shape = (args.size, args.size)
    a, b = make_pair(shape, args.seed)
    print(f"pair: {shape[0]}x{shape[1]} seed {args.seed}; {repeats} repeats; "
          f"load average at start {load}", flush=True)
    tools = {"teareduce": lambda: tea(a, b, return_masks=True),
             "crdask": lambda: crdask.cr2images(a, b, return_masks=True)}
    out, warm, times = {}, {}, {n: [] for n in tools}
    for name, fn in tools.items():      # the same warm-up call for both
        t0 = time.perf_counter()
        out[name] = fn()
        warm[name] = time.perf_counter() - t0
    for i in range(repeats):
        for name in (list(tools) if i % 2 == 0 else list(tools)[::-1]):
            t0 = time.perf_counter()
            tools[name]()
            times[name].append(time.perf_counter() - t0)
    med = {n: median(t) for n, t in times.items()}
    ratio = med["teareduce"] / med["crdask"]
    same = [bool(np.array_equal(np.asarray(x).astype(np.asarray(y).dtype), y))
            for x, y in zip(out["crdask"], out["teareduce"])]
    ncr = [int(np.asarray(m).sum()) for m in out["crdask"][2:]]
    for name in tools:
        print(f"{name:10} median {med[name]:8.3f} s (runs "
              f"{', '.join(f'{t:.3f}' for t in times[name])}; first call "
              f"{warm[name]:.3f} s)", flush=True)
    try:
        load_end = os.getloadavg()
    except OSError:
        load_end = None
    print(f"ratio teareduce/crdask = {ratio:.1f}x (target >= {TARGET:g}: "
          f"{'met' if ratio >= TARGET else 'MISSED'}); outputs identical "
          f"(clean1, clean2, mask1, mask2): {same}; CR px {ncr}; load average at end "
          f"{load_end}", flush=True)
    emit_json({"bench": "cr2images", "shape": list(shape), "seed": args.seed,
               "repeats": repeats, "median_s": med, "runs_s": times, "first_call_s": warm,
               "ratio": ratio, "target_ratio": TARGET, "identical": same, "cr_pixels": ncr,
               "load_start": load, "load_end": load_end, "machine": info})
    return 0 if ratio >= TARGET and all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
