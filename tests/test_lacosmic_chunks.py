"""Chunked (Dask) and tiled (threads) L.A.Cosmic equal the whole frame, bit for bit."""

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, strategies as st

from crdask import lacosmic
from crdask.cosmic.lacosmic_core import overlap_depth
from crdask.cosmic.lacosmic import make_params
from crdask.simulate import simulate_frame

FRAME = simulate_frame(shape=(150, 170), seed=5, n_cosmics=120)
KW = dict(gain=FRAME.gain, readnoise=FRAME.readnoise, satlevel=FRAME.satlevel * FRAME.gain)


def whole(data, **kw):
    return lacosmic(data, num_threads=1, **{**KW, **kw})


def chunk_sizes(total):
    """Random partitions of ``total`` into 1..6 uneven chunks."""
    return st.lists(st.integers(1, total), min_size=0, max_size=5).map(
        lambda cuts: tuple(np.diff([0, *sorted(set(cuts) - {total}), total]).tolist()))


params = st.fixed_dictionaries({
    "sepmed": st.booleans(),
    "cleantype": st.sampled_from(["meanmask", "medmask", "idw", "median"]),
    "fsmode": st.sampled_from(["median", "convolve"]),
    "niter": st.integers(1, 4),
    "padwidth": st.sampled_from([0, 3]),
})


@given(cy=chunk_sizes(150), cx=chunk_sizes(170), kw=params)
def test_dask_equals_whole_frame(cy, cx, kw):
    ref_mask, ref_clean = whole(FRAME.data, **kw)
    arr = da.from_array(FRAME.data, chunks=(cy, cx))
    mask, clean = lacosmic(arr, **KW, **kw)
    assert isinstance(mask, da.Array) and isinstance(clean, da.Array)
    mask, clean = dask.compute(mask, clean, scheduler="threads")
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(clean, ref_clean)


@given(cy=chunk_sizes(150), cx=chunk_sizes(170), seed=st.integers(0, 10))
def test_dask_with_mask_background_variance_and_nan(cy, cx, seed):
    rng = np.random.default_rng(seed)
    data = FRAME.data.copy()
    data[rng.integers(0, 150, 5), rng.integers(0, 170, 5)] = np.nan
    data[40:42, 10:60] = np.inf
    inmask = rng.random(data.shape) < 0.01
    bkg = np.full(data.shape, FRAME.header.get("SKY", 200.0), np.float32) * 0.5
    var = (np.abs(np.nan_to_num(data, posinf=0)) / FRAME.gain + 10).astype(np.float32)
    kw = dict(inmask=inmask, inbkg=bkg, invar=var)
    ref_mask, ref_clean = whole(data, **kw)
    dk = {k: da.from_array(v, chunks=(cy, cx)) for k, v in kw.items()}
    mask, clean = dask.compute(*lacosmic(da.from_array(data, chunks=(cy, cx)), **KW, **dk))
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(clean, ref_clean)  # NaN positions compare equal
    bad = ~np.isfinite(data)
    assert not mask[bad].any()  # bad pixels are never flagged ...
    np.testing.assert_array_equal(clean[bad], data[bad])  # ... and come back unchanged


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_thread_tiling_equals_single_block(threads):
    big = simulate_frame(shape=(700, 300), seed=2)
    kw = dict(gain=big.gain, readnoise=big.readnoise, satlevel=big.satlevel * big.gain)
    m1, c1 = lacosmic(big.data, num_threads=1, **kw)
    mt, ct = lacosmic(big.data, num_threads=threads, **kw)
    np.testing.assert_array_equal(mt, m1)
    np.testing.assert_array_equal(ct, c1)


def test_median_cleantype_global_stop_is_respected():
    """cleantype='median' is not idempotent, so the iteration at which the
    whole frame stops must be decided globally: one isolated CR in one chunk,
    nothing in the others."""
    rng = np.random.default_rng(0)
    data = rng.normal(500, 10, (120, 120)).astype(np.float32)
    data[30, 30] += 3000
    kw = dict(cleantype="median", niter=4, gain=1.0, readnoise=10.0)
    ref = lacosmic(data, num_threads=1, **kw)
    got = dask.compute(*lacosmic(da.from_array(data, chunks=(60, 60)), **kw))
    assert ref[0][30, 30]
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_overlap_depth_follows_parameters():
    base = dict(sigclip=4.5, sigfrac=0.3, objlim=5, gain=1, readnoise=6.5, satlevel=65536,
                sepmed=True, cleantype="meanmask", fsmode="median", psfmodel="gauss",
                psffwhm=2.5, psfsize=7, psfk=None, psfbeta=4.765)
    d4 = overlap_depth(make_params(niter=4, **base))
    d1 = overlap_depth(make_params(niter=1, **base))
    assert d4 > d1 > 0
    full = overlap_depth(make_params(niter=4, **{**base, "sepmed": False}))
    assert full < d4  # full medians reach less far than the separable 7/9
    conv = overlap_depth(make_params(niter=4, **{**base, "fsmode": "convolve", "psfsize": 11}))
    assert conv > d4


@pytest.mark.parametrize("cleantype,passes", [("meanmask", 1), ("median", 2)])
def test_each_block_is_processed_once_per_pass(monkeypatch, cleantype, passes):
    """The graph must not duplicate work: one iteration loop per block (two
    for cleantype='median', whose first pass finds the global stopping
    iteration), one bad-pixel mask per block."""
    from crdask.cosmic import lacosmic_core as core
    calls = {"iterate": 0, "mask": 0}
    real_iterate, real_mask = core.iterate, core.bad_pixel_mask

    def counting_iterate(*a, **k):
        calls["iterate"] += 1
        return real_iterate(*a, **k)

    def counting_mask(*a, **k):
        calls["mask"] += 1
        return real_mask(*a, **k)

    monkeypatch.setattr(core, "iterate", counting_iterate)
    monkeypatch.setattr(core, "bad_pixel_mask", counting_mask)
    arr = da.from_array(FRAME.data, chunks=(50, 85))  # 3 x 2 blocks
    dask.compute(*lacosmic(arr, cleantype=cleantype, **KW), scheduler="threads")
    assert calls["mask"] == 6
    assert calls["iterate"] == 6 * passes
