"""Frames smaller than the overlap depth (issue #7 item 10).

Any frame >= 1x1 must work, numpy or Dask, and chunked == whole. Masks and
cleaned images are compared with astroscrappy's. astroscrappy itself
corrupts the heap on frames with a side < 3, and on a 3x3 frame with
``sepmed`` (its 7-pixel medians read and write outside the buffers: the
process aborts, or not, depending on the heap's layout -- even on the
environment's size), so it runs in a subprocess, and only on frames whose
sides are >= 5 or so; the thinner frames are checked for chunked == whole.
"""

import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest

from crdask import lacosmic
from crdask.cosmic.lacosmic import make_params
from crdask.cosmic.lacosmic_core import overlap_depth

KW = dict(gain=1.0, readnoise=5.0)
ANCHOR_SHAPES = [(30, 2048), (2048, 25), (7, 9), (5, 6), (12, 40)]
THIN_SHAPES = [(1, 50), (50, 1), (1, 1), (2, 40), (39, 2), (3, 3)]


def frame(shape, seed=0):
    """Sky with a CR every ~150 pixels (at least one)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(500, 10, shape).astype(np.float32)
    n = max(1, d.size // 150)
    d[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] += 3000
    return d


_ANCHOR = """
import sys, numpy as np, astroscrappy
z = dict(np.load(sys.argv[1]))
out = {}
for k, d in z.items():
    m, c = astroscrappy.detect_cosmics(d, gain=1.0, readnoise=5.0, sepmed=k.endswith('s'))
    out[k + '_m'] = m
    out[k + '_c'] = c
np.savez(sys.argv[2], **out)
"""


@pytest.fixture(scope="module")
def anchor(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    frames = {}
    for i, shape in enumerate(ANCHOR_SHAPES):
        for sepmed in (True, False):
            frames[f"f{i}{'s' if sepmed else 'f'}"] = frame(shape, i)
    np.savez(tmp / "in.npz", **frames)
    subprocess.run([sys.executable, "-c", _ANCHOR, str(tmp / "in.npz"), str(tmp / "out.npz")],
                   check=True)
    return frames, dict(np.load(tmp / "out.npz"))


def test_default_depth_exceeds_the_small_sides():
    # The shapes below are only a test of the clipping if the default
    # overlap is larger than their short side.
    p = make_params(sigclip=4.5, sigfrac=0.3, objlim=5.0, gain=1.0, readnoise=5.0,
                    satlevel=65536.0, niter=4, sepmed=True, cleantype="meanmask",
                    fsmode="median", psfmodel="gauss", psffwhm=2.5, psfsize=7, psfk=None,
                    psfbeta=4.765)
    assert overlap_depth(p) > 30


@pytest.mark.parametrize("i", range(len(ANCHOR_SHAPES)))
@pytest.mark.parametrize("sepmed", [True, False])
def test_small_frames_match_astroscrappy(anchor, i, sepmed):
    frames, ref = anchor
    key = f"f{i}{'s' if sepmed else 'f'}"
    data = frames[key]
    mask, clean = lacosmic(data, sepmed=sepmed, **KW)
    assert mask.shape == data.shape
    np.testing.assert_array_equal(mask, ref[key + "_m"])
    np.testing.assert_array_equal(clean, ref[key + "_c"])
    if min(data.shape) >= 25:
        assert mask.any()  # the CRs are found, not just "nothing happened"


@pytest.mark.parametrize("shape", ANCHOR_SHAPES + THIN_SHAPES)
@pytest.mark.parametrize("cleantype", ["meanmask", "median"])
def test_small_frames_dask_equals_numpy(shape, cleantype):
    data = frame(shape, 7)
    ref = lacosmic(data, cleantype=cleantype, num_threads=1, **KW)
    threaded = lacosmic(data, cleantype=cleantype, num_threads=4, **KW)
    chunks = (max(1, shape[0] // 3), max(1, shape[1] // 4))
    got = dask.compute(*lacosmic(da.from_array(data, chunks=chunks), cleantype=cleantype,
                                 **KW))
    for a, b in ((threaded, ref), (got, ref)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
