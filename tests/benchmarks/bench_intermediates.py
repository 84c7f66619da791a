"""Benchmark: Zarr intermediates (``crdask.io.IntermediateStore``) against FITS.

Times writing and then reading back one calibrated frame -- float32 ``sci``,
float32 ``var``, uint8 ``mask`` (1 % of pixels flagged), 2048x2048 by default
-- three ways, alternating within each round so a noisy machine hits all of
them alike:

* ``crdask``: ``IntermediateStore.write_frame`` + ``read_frame`` (the codecs
  and chunking documented in :mod:`crdask.io.intermediates`);
* ``fits`` (the anchor): ``astropy.io.fits.HDUList.writeto`` of a primary HDU
  and two image extensions, then ``fits.open(memmap=False)`` and the data as
  native-endian numpy arrays (what a pipeline step needs);
* ``crdask_unverified``: the same store read with ``verify=False`` (no chunk
  size or CRC-32 checks), to show what verification costs on reading; the
  CRC-32 computed on writing is timed on its own
  (``intermediates.chunk_checksums`` over the frame's chunks) and reported as
  the write-side cost;
* ``zarr_default``: a Zarr 3 group with ``create_array`` defaults (zstd,
  automatic chunks), i.e. what the issue measured.

Files go to a temporary directory (``--dir`` to choose the filesystem) and are
read back from the page cache, as the next pipeline step does. Each round's
files are deleted (untimed) after they are read back, so the kernel's dirty
page write-back -- the same for every format, and very noisy on a shared
machine -- does not decide the race; ``--keep`` keeps them. Prints the median
write/read/total times, MB/s, the ratio to FITS, the peak traced memory of one
write+read of each, and one ``JSON {...}`` line.

    python tests/benchmarks/bench_intermediates.py [--shape 2048] [--repeats 15]
        [--dir DIR]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchcommon as bc  # noqa: E402


def make_frame(n, seed=0):
    rng = np.random.default_rng(seed)
    sci = rng.normal(1500.0, 12.0, (n, n)).astype(np.float32)
    var = (np.abs(sci) / 2.0 + 25.0).astype(np.float32)
    mask = np.zeros((n, n), np.uint8)
    mask[rng.random((n, n)) < 0.01] = 4
    mask[:, :3] |= 1                               # a bad column or three
    return {"sci": sci, "var": var, "mask": mask}


class Crdask:
    label = "crdask IntermediateStore"

    def __init__(self, d):
        from crdask.io.intermediates import IntermediateStore
        self.store = IntermediateStore(os.path.join(d, "intermediate.zarr"))

    def write(self, i, arrays):
        self.store.write_frame(f"f{i}", **arrays)

    def read(self, i):
        return self.store.read_frame(f"f{i}")

    def nbytes(self, i):
        return _du(os.path.join(self.store.path, "frames", f"f{i}"))

    def remove(self, i):
        self.store.delete_frame(f"f{i}")


class CrdaskUnverified(Crdask):
    label = "crdask, read unverified"

    def read(self, i):
        return self.store.read_frame(f"f{i}", verify=False)


def checksum_seconds(arrays):
    """Time of the CRC-32s a write computes (the same chunking as the store)."""
    from crdask.io.intermediates import MAX_CHUNK_BYTES, chunk_checksums, chunk_shape_for
    t0 = time.perf_counter()
    for a in arrays.values():
        chunk_checksums(a, chunk_shape_for(a.shape, a.dtype.itemsize, MAX_CHUNK_BYTES))
    return time.perf_counter() - t0


class Fits:
    label = "astropy FITS"

    def __init__(self, d):
        self.d = d

    def _p(self, i):
        return os.path.join(self.d, f"f{i}.fits")

    def write(self, i, arrays):
        from astropy.io import fits
        hdus = [fits.PrimaryHDU(arrays["sci"])]
        hdus += [fits.ImageHDU(arrays[k], name=k.upper()) for k in ("var", "mask")]
        fits.HDUList(hdus).writeto(self._p(i), overwrite=True)

    def read(self, i):
        from astropy.io import fits
        with fits.open(self._p(i), memmap=False) as hdul:
            return {k: np.asarray(h.data, dtype=h.data.dtype.newbyteorder("="))
                    for k, h in zip(("sci", "var", "mask"), hdul)}

    def nbytes(self, i):
        return os.path.getsize(self._p(i))

    def remove(self, i):
        os.unlink(self._p(i))


class ZarrDefault:
    label = "zarr 3 defaults"

    def __init__(self, d):
        self.d = d

    def _p(self, i):
        return os.path.join(self.d, f"z{i}.zarr")

    def write(self, i, arrays):
        import zarr
        g = zarr.open_group(self._p(i), mode="w", zarr_format=3)
        for k, a in arrays.items():
            g.create_array(k, shape=a.shape, dtype=a.dtype)[...] = a

    def read(self, i):
        import zarr
        g = zarr.open_group(self._p(i), mode="r")
        return {k: g[k][...] for k in ("sci", "var", "mask")}

    def nbytes(self, i):
        return _du(self._p(i))

    def remove(self, i):
        shutil.rmtree(self._p(i))


def _du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dir", default=None, help="directory for the files (default: tmp)")
    ap.add_argument("--keep", action="store_true",
                    help="keep every round's files (then the disk's write-back speed, "
                         "not the formats, dominates once the page cache fills)")
    args = ap.parse_args(argv)

    info = bc.machine()
    bc.print_machine(info)
    import zarr
    arrays = make_frame(args.shape)
    mb = sum(a.nbytes for a in arrays.values()) / 1e6
    d = tempfile.mkdtemp(prefix="bench_intermediates_", dir=args.dir)
    try:
        methods = [Crdask(d), CrdaskUnverified(os.path.join(d, "u")), Fits(d), ZarrDefault(d)]
        # warm-up (imports, event loop, page cache) and correctness check
        for m in methods:
            m.write(-1, arrays)
            out = m.read(-1)
            for k, a in arrays.items():
                if not np.array_equal(out[k], a) or out[k].dtype != a.dtype:
                    raise SystemExit(f"{m.label}: {k} did not round-trip")
        times = {m.label: {"write": [], "read": [], "total": []} for m in methods}
        crc_times = []
        for r in range(args.repeats):
            crc_times.append(checksum_seconds(arrays))
            order = methods if r % 2 == 0 else methods[::-1]
            for m in order:
                t0 = time.perf_counter()
                m.write(r, arrays)
                t1 = time.perf_counter()
                m.read(r)
                t2 = time.perf_counter()
                times[m.label]["write"].append(t1 - t0)
                times[m.label]["read"].append(t2 - t1)
                times[m.label]["total"].append(t2 - t0)
                if not args.keep and r > 0:
                    m.remove(r)   # untimed; keeps dirty-page writeback out of the race
        peaks = {}
        for m in methods:
            tracemalloc.start()
            m.write(args.repeats, arrays)
            m.read(args.repeats)
            peaks[m.label] = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
        sizes = {m.label: methods[i].nbytes(0) / 1e6 for i, m in enumerate(methods)}
    finally:
        shutil.rmtree(d, ignore_errors=True)

    med = {k: {p: bc.median(v[p]) for p in v} for k, v in times.items()}
    ref = med[Fits.label]["total"]
    print(f"frame {args.shape}x{args.shape}: sci f4 + var f4 + mask u1 = {mb:.1f} MB; "
          f"median of {args.repeats} alternating rounds (write + read from page cache); "
          f"zarr {zarr.__version__}")
    for k, v in med.items():
        print(f"  {k:26s} write {v['write'] * 1e3:7.1f} ms  read {v['read'] * 1e3:7.1f} ms  "
              f"total {v['total'] * 1e3:7.1f} ms = {mb / v['total']:6.0f} MB/s  "
              f"ratio to FITS {v['total'] / ref:5.2f}  on disk {sizes[k]:5.1f} MB  "
              f"peak mem {peaks[k]:6.1f} MB")
    c, z = med[Crdask.label]["total"], med[ZarrDefault.label]["total"]
    print(f"crdask store is {ref / c:.2f}x the speed of FITS and {z / c:.2f}x that of "
          "zarr defaults (write + read)")
    crc = bc.median(crc_times)
    vread = med[Crdask.label]["read"] - med[CrdaskUnverified.label]["read"]
    print(f"verification cost: CRC-32 on write {crc * 1e3:.1f} ms, checks on read "
          f"{vread * 1e3:+.1f} ms (verified - unverified read) = "
          f"{(crc + vread) / c * 100:.0f} % of the store's write + read")
    bc.emit_json({
        "benchmark": "intermediates", "shape": [args.shape, args.shape], "mb": mb,
        "repeats": args.repeats, "zarr": zarr.__version__,
        "median_s": med, "ratio_to_fits": {k: v["total"] / ref for k, v in med.items()},
        "mb_per_s": {k: mb / v["total"] for k, v in med.items()},
        "disk_mb": sizes, "peak_mem_mb": peaks, "machine": info,
        "verify_cost_s": {"write_crc32": crc, "read_checks": vread},
    })


if __name__ == "__main__":
    main()
