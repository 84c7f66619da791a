"""Out-of-core L.A.Cosmic: ``crdask lacosmic`` on a 20,000 x 20,000 float32 frame.

Run as ``python tests/benchmarks/bench_lacosmic_outofcore.py [--size N] [--keep]``.
Writes a simulated frame (flat sky with Poisson-like noise, Gaussian stars,
cosmic rays: single pixels, blobs and tracks) as a float32 FITS file under a
temporary folder in /tmp (1.6 GB at the default size), runs ``crdask
lacosmic FILE --out-dir OUT`` in a subprocess and samples the resident memory
(RSS) of the whole process tree every 0.1 s with psutil; prints the peak
(target: < 4 GiB; astroscrappy would need about 12 float32/float64 frame
copies, ~19 GB, so it is not run: the machine has 23 GB). Then checks the
mask against tiles cleaned separately: ``--tiles`` tiles of 512 x 512 at
seeded random places, each cleaned in memory with ``crdask.lacosmic`` on the
tile plus the overlap depth of halo; the output's mask must equal each
tile's interior. One final ``JSON {...}`` line holds all figures.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _benchcommon import emit_json, machine, print_machine  # noqa: E402

TARGET_GIB = 4.0
GAIN, READNOISE, SKY = 2.0, 5.0, 200.0


def write_frame(path, size, seed, strip=1000):
    """Simulated float32 frame written strip by strip (never whole in memory)."""
    from astropy.io import fits

    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = -32
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = size
    hdr["NAXIS2"] = size
    hdr["GAIN"] = GAIN
    hdr["RDNOISE"] = READNOISE
    hdr["OBJECT"] = f"bench out-of-core {size}x{size} seed {seed}"
    rng = np.random.default_rng(seed)
    ncr = 0
    with open(path, "wb") as f:
        f.write(hdr.tostring().encode("ascii"))
        for y0 in range(0, size, strip):
            h = min(strip, size - y0)
            img = np.full((h, size), SKY, np.float32)
            yy, xx = np.mgrid[0:15, 0:15]
            # stars: ~200 per 512^2 (as crdask.simulate), drawn into 15x15 stamps
            for _ in range(int(200 * h * size / 512 ** 2)):
                y, x = rng.uniform(7, h - 8), rng.uniform(7, size - 8)
                iy, ix = int(y) - 7, int(x) - 7
                s = rng.uniform(0.9, 1.3)
                amp = np.exp(rng.uniform(np.log(20), np.log(30000)))
                img[iy:iy + 15, ix:ix + 15] += (amp * np.exp(
                    -((yy + iy - y) ** 2 + (xx + ix - x) ** 2) / (2 * s * s))).astype(np.float32)
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.sqrt(
                img / GAIN + (READNOISE / GAIN) ** 2)
            # cosmic rays: ~150 per 512^2; 1-pixel hits, blobs, short tracks
            n = int(150 * h * size / 512 ** 2)
            ncr += n
            ys, xs = rng.integers(0, h, n), rng.integers(0, size, n)
            kind = rng.random(n)
            for y, x, k in zip(ys, xs, kind):
                length = 1 if k < 0.35 else (rng.integers(2, 7) if k < 0.7 else rng.integers(3, 30))
                dy, dx = np.sin(a := rng.uniform(0, np.pi)), np.cos(a)
                for t in range(int(length)):
                    yy_, xx_ = int(y + t * dy), int(x + t * dx)
                    if 0 <= yy_ < h and 0 <= xx_ < size:
                        img[yy_, xx_] += np.float32(np.exp(rng.uniform(np.log(150), np.log(10000))))
            f.write(img.astype(">f4").tobytes())
        pad = -f.tell() % 2880
        f.write(b"\0" * pad)
    return ncr


def tree_rss(proc):
    """RSS (bytes) of ``proc`` and all its descendants."""
    import psutil
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_sampled(cmd, env):
    import psutil
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ps = psutil.Process(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(ps))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    return proc.returncode, out, err, peak[0], time.perf_counter() - t0


def check_tiles(inp, outp, ntiles, tile, seed):
    from astropy.io import fits

    import crdask
    from crdask.cosmic.lacosmic import make_params
    from crdask.cosmic.lacosmic_core import overlap_depth

    p = make_params(sigclip=4.5, sigfrac=0.3, objlim=5.0, gain=GAIN, readnoise=READNOISE,
                    satlevel=65536.0, niter=4, sepmed=True, cleantype="meanmask",
                    fsmode="median", psfmodel="gauss", psffwhm=2.5, psfsize=7, psfk=None,
                    psfbeta=4.765)
    depth = overlap_depth(p)
    rng = np.random.default_rng(seed)
    res = []
    with fits.open(inp, memmap=True) as hi, fits.open(outp, memmap=True) as ho:
        data, mask = hi[0].data, ho["MASK"].data
        ny, nx = data.shape
        for k in range(ntiles):
            if k == 0:
                y0, x0 = 0, 0                       # a frame corner
            elif k == 1:
                y0, x0 = ny - tile, nx - tile       # the opposite corner
            else:
                y0, x0 = int(rng.integers(0, ny - tile)), int(rng.integers(0, nx - tile))
            ya, yb = max(0, y0 - depth), min(ny, y0 + tile + depth)
            xa, xb = max(0, x0 - depth), min(nx, x0 + tile + depth)
            sub = np.array(data[ya:yb, xa:xb], dtype=np.float32)
            m, _ = crdask.lacosmic(sub, gain=GAIN, readnoise=READNOISE)
            want = m[y0 - ya:y0 - ya + tile, x0 - xa:x0 - xa + tile]
            got = np.asarray(mask[y0:y0 + tile, x0:x0 + tile]) != 0
            res.append({"y0": y0, "x0": x0, "cr_pixels": int(got.sum()),
                        "pixels_differ": int(np.count_nonzero(got != want))})
    return depth, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tiles", type=int, default=6)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--keep", action="store_true", help="keep the files in /tmp")
    args = ap.parse_args(argv)

    info = machine()
    print_machine(info)
    tmp = tempfile.mkdtemp(prefix="crdask-ooc-", dir="/tmp")
    try:
        inp = os.path.join(tmp, "big.fits")
        t0 = time.perf_counter()
        ncr = write_frame(inp, args.size, args.seed)
        print(f"frame: {args.size}x{args.size} float32 ({os.path.getsize(inp) / 2**30:.2f} GiB)"
              f", {ncr} CR events, written in {time.perf_counter() - t0:.0f} s: {inp}",
              flush=True)
        out = os.path.join(tmp, "out")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "crdask", "lacosmic", inp, "--out-dir", out,
               "--gain-key", "GAIN", "--readnoise-key", "RDNOISE"]
        load0 = os.getloadavg()
        rc, so, se, peak, secs = run_sampled(cmd, env)
        load1 = os.getloadavg()
        if rc != 0:
            print(so, se)
            raise SystemExit(f"crdask lacosmic failed with exit code {rc}")
        peak_gib = peak / 2**30
        print(f"crdask lacosmic: {secs:.1f} s, peak RSS of the process tree "
              f"{peak_gib:.2f} GiB (target < {TARGET_GIB} GiB: "
              f"{'met' if peak_gib < TARGET_GIB else 'MISSED'}); load average "
              f"{load0[0]:.1f} before, {load1[0]:.1f} after; {so.strip().splitlines()[-1]}",
              flush=True)
        outp = os.path.join(out, "big_crclean.fits")
        depth, tiles = check_tiles(inp, outp, args.tiles, args.tile, args.seed)
        ndiff = sum(t["pixels_differ"] for t in tiles)
        print(f"tiles: {len(tiles)} of {args.tile}x{args.tile} cleaned separately with "
              f"{depth} px of overlap: {ndiff} mask pixels differ "
              f"({sum(t['cr_pixels'] for t in tiles)} CR pixels in them)", flush=True)
        emit_json({"shape": [args.size, args.size], "seed": args.seed, "seconds": secs,
                   "peak_rss_gib": peak_gib, "target_gib": TARGET_GIB,
                   "target_met": peak_gib < TARGET_GIB, "load_before": load0,
                   "load_after": load1, "overlap_depth": depth, "tiles": tiles,
                   "tile_pixels_differ": ndiff, "machine": info})
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
