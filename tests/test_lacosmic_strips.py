"""Row strips on threads (the numpy path of ``crdask.lacosmic``) give the
whole-frame block's results bit for bit, whatever the number of strips."""

import numpy as np
from hypothesis import given, settings, strategies as st

from crdask.cosmic import lacosmic_core as core
from crdask.cosmic.lacosmic import make_params
from crdask.cosmic.lacosmic_graph import lacosmic_whole
from crdask.cosmic.lacosmic_strips import lacosmic_strips


def frame(rng, ny, nx):
    """Sky, one bright (saturating) star and CR hits, in ADU."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = rng.poisson(np.full((ny, nx), 200.0)).astype(np.float64)
    img += 60000.0 * np.exp(-((yy - ny / 2) ** 2 + (xx - nx / 3) ** 2) / 4.0)
    hits = rng.integers(0, ny * nx, max(1, ny * nx // 60))
    img.flat[hits] += rng.uniform(500, 20000, hits.size)
    return np.minimum(img, 65000).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), ny=st.integers(8, 140), nx=st.integers(8, 60),
       nstrips=st.integers(1, 6), threads=st.sampled_from([1, 3]),
       cleantype=st.sampled_from(core.CLEANTYPES), niter=st.integers(1, 4),
       extras=st.sampled_from(["none", "all", "nan", "float64"]))
def test_strips_equal_whole_frame(seed, ny, nx, nstrips, threads, cleantype, niter, extras):
    rng = np.random.default_rng(seed)
    data = frame(rng, ny, nx)
    inmask = inbkg = invar = None
    if extras == "all":
        inmask = rng.random(data.shape) < 0.02
        inbkg = np.full(data.shape, np.float32(100.0))
        invar = (np.abs(data) / 2.0 + 12.0).astype(np.float32)
    elif extras == "nan":
        data[rng.integers(0, ny, 3), rng.integers(0, nx, 3)] = np.nan
    elif extras == "float64":
        data = data.astype(np.float64) + 0.1
    p = make_params(gain=2.0, readnoise=5.0, satlevel=100000.0, niter=niter,
                    cleantype=cleantype, sigclip=4.0, objlim=3.0)
    want_mask, want_clean = lacosmic_whole(data, inmask, inbkg, invar, p)
    mask, clean = lacosmic_strips(data, inmask, inbkg, invar, p, nstrips, threads)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(clean.view(np.uint32), want_clean.view(np.uint32))
