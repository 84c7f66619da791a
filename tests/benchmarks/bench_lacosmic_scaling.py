"""Scaling: crdask.lacosmic on a Dask array over a distributed LocalCluster, 1 vs 2 workers.

Run as ``python tests/benchmarks/bench_lacosmic_scaling.py [--quick]``. One
8192x8192 frame (``--quick``: 4096x4096) is simulated once and saved as
``.npy`` in a temporary directory; the Dask array reads its chunks from that
file by memmap inside the workers (no data is shipped in the graph). For each
chunking (row strips of 1024 / 2048 rows at full width, 2048x2048 tiles) the
full graph is run on ``LocalCluster(n_workers=W, threads_per_worker=1,
processes=True)`` for W = 1 and W = 2, reduced to ``crmask.sum()`` and
``clean.sum()`` (every block runs in full; only two scalars come back).
Both clusters are started and warmed up (numba cache load / JIT on every
worker, and one small Dask run) before any timing; the runs alternate W=1 /
W=2 for ``--repeats`` rounds (default 2, ``--quick`` 1) and medians are
reported. Target: speed-up W1/W2 >= 1.7. Mask sums must be identical across
all runs. One final ``JSON {...}`` line holds all figures.
"""

import argparse
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _benchcommon import emit_json, machine, median, print_machine  # noqa: E402

TARGET = 1.7


def _read_block(path, r0, r1, c0, c1):
    # Runs on a worker: read one chunk of the saved frame through a memmap.
    return np.array(np.load(path, mmap_mode="r")[r0:r1, c0:c1])


def memmap_dask_array(path, shape, chunks):
    """Dask array over an ``.npy`` file; each chunk is read where it is computed."""
    import dask
    import dask.array as da
    rows = range(0, shape[0], chunks[0])
    cols = range(0, shape[1], chunks[1])
    blocks = [[da.from_delayed(
        dask.delayed(_read_block, pure=True)(path, r, min(r + chunks[0], shape[0]),
                                             c, min(c + chunks[1], shape[1])),
        shape=(min(r + chunks[0], shape[0]) - r, min(c + chunks[1], shape[1]) - c),
        dtype=np.float32) for c in cols] for r in rows]
    return da.block(blocks)


def _warm_worker(kw, sepmed):
    # Runs on every worker: load / compile the numba kernels on a small frame,
    # through the same Dask block path as the timed run.
    import dask
    import dask.array as da

    import crdask
    rng = np.random.default_rng(0)
    small = rng.normal(200, 10, (512, 512)).astype(np.float32)
    small[100, 100] += 5000
    m, c = crdask.lacosmic(da.from_array(small, chunks=(128, 512)), sepmed=sepmed, **kw)
    with dask.config.set(scheduler="sync"):
        return int(m.sum().compute())


def run_once(client, path, shape, chunks, kw, sepmed):
    import crdask
    arr = memmap_dask_array(path, shape, chunks)
    mask, clean = crdask.lacosmic(arr, sepmed=sepmed, **kw)
    t0 = time.perf_counter()
    msum, csum = client.compute([mask.sum(), clean.sum(dtype=np.float64)], sync=True)
    dt = time.perf_counter() - t0
    return dt, int(msum), float(csum)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4096x4096, 1 repeat")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sepmed", choices=("True", "False"), default="True")
    ap.add_argument("--chunks", nargs="*", default=None,
                    help="chunkings as ROWSxCOLS (COLS 'full' for full width)")
    args = ap.parse_args(argv)
    size = args.size or (4096 if args.quick else 8192)
    repeats = args.repeats or (1 if args.quick else 2)
    sepmed = args.sepmed == "True"

    from distributed import Client, LocalCluster

    from crdask.simulate import simulate_frame

    info = machine()
    print_machine(info)
    if args.chunks:
        chunkings = [(int(r), size if c == "full" else int(c))
                     for r, c in (s.split("x") for s in args.chunks)]
    else:
        chunkings = [(1024, size), (2048, size), (2048, 2048)]
        if size <= 4096:
            chunkings.append((512, size))
    t0 = time.perf_counter()
    f = simulate_frame((size, size), args.seed)
    kw = dict(gain=f.gain, readnoise=f.readnoise, satlevel=f.satlevel * f.gain)
    print(f"frame: {size}x{size} seed {args.seed} ({f.data.nbytes / 2**20:.0f} MiB float32, "
          f"simulated in {time.perf_counter() - t0:.0f} s), sepmed={sepmed}, "
          f"{repeats} repeats, chunkings {['%dx%d' % c for c in chunkings]}", flush=True)
    results = {"shape": [size, size], "seed": args.seed, "repeats": repeats,
               "sepmed": sepmed, "target_speedup": TARGET, "machine": info, "runs": {}}

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "frame.npy")
        np.save(path, np.ascontiguousarray(f.data, dtype=np.float32))
        shape = f.data.shape
        warm_path = os.path.join(tmp, "warm.npy")
        np.save(warm_path, np.ascontiguousarray(f.data[:512, :512], dtype=np.float32))
        del f

        clusters, clients = {}, {}
        try:
            for w in (1, 2):
                t0 = time.perf_counter()
                clusters[w] = LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                           dashboard_address=":0",
                                           silence_logs=logging.ERROR)
                clients[w] = Client(clusters[w], set_as_default=False)
                clients[w].run(_warm_worker, kw, sepmed)
                # one small distributed run as well (graph submission, memmap read)
                run_once(clients[w], warm_path, (512, 512), (128, 512), kw, sepmed)
                print(f"cluster W={w}: started and warmed up in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)

            mask_sums, clean_sums = set(), set()
            summary = {}
            for ch in chunkings:
                name = f"{ch[0]}x{ch[1]}"
                times = {1: [], 2: []}
                for i in range(repeats):
                    for w in ((1, 2) if i % 2 == 0 else (2, 1)):
                        dt, ms, cs = run_once(clients[w], path, shape, ch, kw, sepmed)
                        times[w].append(dt)
                        mask_sums.add(ms)
                        clean_sums.add(round(cs, 1))
                        print(f"chunks {name:>10}  W={w}  {dt:7.2f} s  "
                              f"(mask sum {ms}, clean sum {cs:.6e})", flush=True)
                med = {w: median(ts) for w, ts in times.items()}
                speedup = med[1] / med[2]
                print(f"chunks {name:>10}  median W1 {med[1]:.2f} s, W2 {med[2]:.2f} s, "
                      f"speed-up W1/W2 = {speedup:.2f} (target >= {TARGET}: "
                      f"{'met' if speedup >= TARGET else 'MISSED'})", flush=True)
                summary[name] = {"chunks": list(ch), "times_s": times,
                                 "median_s": med, "speedup": speedup,
                                 "target_met": speedup >= TARGET}
        finally:
            logging.getLogger("distributed").setLevel(logging.ERROR)
            for w in clients:
                clients[w].close()
                clusters[w].close()

    best = min(summary, key=lambda k: summary[k]["median_s"][2])
    identical = len(mask_sums) == 1
    print(f"best chunking (fastest on W=2): {best}: W1 {summary[best]['median_s'][1]:.2f} s, "
          f"W2 {summary[best]['median_s'][2]:.2f} s, speed-up {summary[best]['speedup']:.2f}; "
          f"tried {', '.join(summary)}", flush=True)
    print(f"mask sums identical across all runs: {identical} ({sorted(mask_sums)}); "
          f"clean sums {sorted(clean_sums)}", flush=True)
    results.update(runs=summary, best=best, best_speedup=summary[best]["speedup"],
                   mask_sums=sorted(mask_sums), mask_sums_identical=identical,
                   clean_sums=sorted(clean_sums))
    emit_json(results)


if __name__ == "__main__":
    main()
