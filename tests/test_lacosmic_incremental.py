"""Incremental iterations (only near the pixels the last cleaning changed)
give exactly the full recomputation's results, for every parameter set."""

import dask
import dask.array as da
import numpy as np
from hypothesis import given, settings, strategies as st

from crdask import lacosmic
from crdask.cosmic import lacosmic_core as core
from crdask.cosmic import lacosmic_detect as detect
from crdask.cosmic.lacosmic import make_params
from crdask.cosmic.lacosmic_graph import electrons
from crdask.kernels.lacosmic_steps import dirty_boxes


def random_frame(rng, ny, nx, n_cr):
    """Sky, a few stars (some saturating) and CRs of 1-6 pixels, in ADU."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.full((ny, nx), rng.uniform(50, 500), np.float64)
    for _ in range(rng.integers(0, 6)):
        y, x, s = rng.uniform(0, ny), rng.uniform(0, nx), rng.uniform(0.8, 2.0)
        img += rng.uniform(100, 80000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    img = rng.poisson(img).astype(np.float64) + rng.normal(0, 5, img.shape)
    for _ in range(n_cr):
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        for _ in range(rng.integers(1, 7)):
            img[y, x] += rng.uniform(200, 20000)
            y = min(max(y + rng.integers(-1, 2), 0), ny - 1)
            x = min(max(x + rng.integers(-1, 2), 0), nx - 1)
    return np.minimum(img, 65000).astype(np.float32)


cases = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "ny": st.integers(8, 90), "nx": st.integers(8, 90),
    "density": st.sampled_from([0.002, 0.01, 0.04]),
    "sepmed": st.booleans(),
    "cleantype": st.sampled_from(core.CLEANTYPES),
    "fsmode": st.sampled_from(core.FSMODES),
    "niter": st.integers(1, 5),
    "extras": st.sampled_from(["none", "inmask", "inbkg", "invar", "all", "nan"]),
    "band": st.sampled_from([1, 3, 8, 32]),
    # inf: always the windows (small test frames would mostly fall back to
    # one whole-image detection at the default fraction)
    "max_fraction": st.sampled_from([np.inf, np.inf, detect.UPDATE_MAX_FRACTION]),
})


def setup(c):
    rng = np.random.default_rng(c["seed"])
    ny, nx = c["ny"], c["nx"]
    data = random_frame(rng, ny, nx, max(1, int(c["density"] * ny * nx)))
    inmask = inbkg = invar = None
    if c["extras"] in ("inmask", "all"):
        inmask = rng.random(data.shape) < 0.02
    if c["extras"] in ("inbkg", "all"):
        inbkg = np.full(data.shape, np.float32(np.median(data) * 0.5))
    if c["extras"] in ("invar", "all"):
        invar = (np.abs(data) / 2.0 + 12.0).astype(np.float32)
    if c["extras"] == "nan":
        data[rng.integers(0, ny, 3), rng.integers(0, nx, 3)] = np.nan
    p = make_params(sigclip=4.0, sigfrac=0.3, objlim=3.0, gain=2.0, readnoise=5.0,
                    satlevel=60000.0, niter=c["niter"], sepmed=c["sepmed"],
                    cleantype=c["cleantype"], fsmode=c["fsmode"], psfmodel="gauss",
                    psffwhm=2.5, psfsize=5, psfk=None, psfbeta=4.765)
    return data, inmask, inbkg, invar, p


def run(data, inmask, inbkg, invar, p, incremental, stop):
    clean, bkg, var, raw, bad_input = electrons(data, inbkg, invar, p)
    given_mask = np.zeros(data.shape, bool) if inmask is None else inmask.copy()
    if bad_input is not None:
        given_mask |= bad_input
    bad = core.bad_pixel_mask(raw, given_mask, p)
    inner = (slice(2, -2), slice(3, -1))
    crmask, bits = core.iterate(clean, var, bkg, bad, p, np.float32(17.5), np.float32(40.25),
                                p.niter, stop_when_clean=stop, count_region=inner,
                                incremental=incremental)
    return crmask, clean, var, bits


@settings(max_examples=60, deadline=None)
@given(c=cases)
def test_incremental_equals_full_recomputation(c):
    data, inmask, inbkg, invar, p = setup(c)
    old = detect.UPDATE_CELL, detect.UPDATE_MAX_FRACTION
    detect.UPDATE_CELL = c["band"]  # box edges anywhere, including 1-pixel cells
    detect.UPDATE_MAX_FRACTION = c["max_fraction"]
    try:
        for stop in (True, False):  # the local rule, and a frame-wide iteration count
            full = run(data, inmask, inbkg, invar, p, False, stop)
            inc = run(data, inmask, inbkg, invar, p, True, stop)
            np.testing.assert_array_equal(inc[0], full[0])
            for a, b in zip(inc[1:3], full[1:3]):  # bit for bit, signed zeros too
                np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
            assert inc[3] == full[3]
    finally:
        detect.UPDATE_CELL, detect.UPDATE_MAX_FRACTION = old


def test_later_iterations_find_more_and_touch_little():
    """The case the incremental path exists for: the later iterations do find
    new pixels (so they matter), and re-detect only part of the frame."""
    rng = np.random.default_rng(4)
    data = random_frame(rng, 300, 300, 40)
    p = make_params(sigclip=4.5, sigfrac=0.3, objlim=5.0, gain=2.0, readnoise=5.0,
                    satlevel=60000.0, niter=4, sepmed=True, cleantype="meanmask",
                    fsmode="median", psfmodel="gauss", psffwhm=2.5, psfsize=7, psfk=None,
                    psfbeta=4.765)
    clean, bkg, var, raw, _ = electrons(data, None, None, p)
    bad = core.bad_pixel_mask(raw, np.zeros(data.shape, bool), p)
    calls, areas = [], []
    real, real_windows = detect.detect_once, detect.update_windows

    def spy(c, *a, **k):
        calls.append(c.size)
        return real(c, *a, **k)

    def spy_windows(*a, **k):
        boxes, wins = real_windows(*a, **k)
        areas.append(data.size if wins is None else
                     int(((wins[:, 1] - wins[:, 0]) * (wins[:, 3] - wins[:, 2])).sum()))
        return boxes, wins

    # iterate calls core's name for the first, whole-image detection;
    # detect_update asks update_windows where to re-detect
    core.detect_once = spy
    detect.update_windows = spy_windows
    try:
        crmask, _ = core.iterate(clean, var, bkg, bad, p, np.float32(0), np.float32(0), 4)
    finally:
        core.detect_once, detect.update_windows = real, real_windows
    full, _ = run(data, None, None, None, p, False, True)[:2]
    np.testing.assert_array_equal(crmask, full)
    assert calls == [data.size]
    assert len(areas) >= 1 and 0 < sum(areas) < 3 * data.size


def test_dask_chunks_with_incremental_iterations_equal_full_whole_frame():
    rng = np.random.default_rng(9)
    data = random_frame(rng, 160, 140, 60)
    kw = dict(gain=2.0, readnoise=5.0, niter=4, cleantype="median")
    mask, clean = dask.compute(*lacosmic(da.from_array(data, chunks=(45, 70)), **kw))
    old = core.iterate
    core.iterate = lambda *a, **k: old(*a, **{**k, "incremental": False})
    try:
        ref_mask, ref_clean = lacosmic(data, num_threads=1, **kw)
    finally:
        core.iterate = old
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(clean, ref_clean)


def test_dirty_boxes_cover_the_reach_of_every_changed_pixel():
    rng = np.random.default_rng(1)
    for trial in range(30):
        ny, nx = rng.integers(1, 80, 2)
        reach, cell = int(rng.integers(0, 9)), int(rng.integers(1, 9))
        n = int(rng.integers(1, 15))
        ys, xs = rng.integers(0, ny, n), rng.integers(0, nx, n)
        want = np.zeros((ny, nx), bool)
        for y, x in zip(ys, xs):
            want[max(y - reach, 0):y + reach + 1, max(x - reach, 0):x + reach + 1] = True
        boxes = dirty_boxes(ys, xs, ny, nx, reach, cell)
        got = np.zeros((ny, nx), bool)
        for y0, y1, x0, x1 in boxes:
            assert 0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx
            got[y0:y1, x0:x1] = True
        assert (got | ~want).all()          # every reach is covered ...
        for y0, y1, x0, x1 in boxes:       # ... and each box is tight on its reaches
            sub = want[y0:y1, x0:x1]
            assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
