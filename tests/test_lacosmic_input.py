"""Bad input gives one clear error naming the parameter, before heavy work;
NaN/inf pixels are masked; CCDData and big-endian arrays work."""

import dask.array as da
import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData

from crdask import detect_cosmics, lacosmic
from crdask.simulate import simulate_frame

SIM = simulate_frame(shape=(96, 112), seed=4, n_cosmics=40)
KW = dict(gain=SIM.gain, readnoise=SIM.readnoise)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(gain=-1.0), ValueError, r"^gain: -1.0 is not allowed; allowed: a number > 0$"),
    (dict(gain=0.0), ValueError, r"^gain: 0.0 is not allowed; allowed: a number > 0$"),
    (dict(readnoise=-2.0), ValueError, r"^readnoise: -2.0 is not allowed; allowed: a number >= 0"),
    (dict(sigclip=float("nan")), ValueError, r"^sigclip: nan is not allowed"),
    (dict(niter=1.5), ValueError, r"^niter: 1.5 is not allowed; allowed: an integer >= 0"),
    (dict(niter=-1), ValueError, r"^niter: -1 is not allowed; allowed: an integer >= 0"),
    (dict(cleantype="mean"), ValueError, r"^cleantype: 'mean' is not allowed; allowed: median, "),
    (dict(fsmode="fourier"), ValueError, r"^fsmode: 'fourier' is not allowed; allowed: median, "),
    (dict(psfmodel="airy"), ValueError, r"^psfmodel: 'airy' is not allowed; allowed: gauss, "),
    (dict(fsmode="convolve", psfsize=6), ValueError, r"^psfsize: 6 is not allowed; allowed: an odd"),
    (dict(fsmode="convolve", psfk=np.ones((4, 4))), ValueError, r"^psfk: shape \(4, 4\)"),
    (dict(padwidth=-1), ValueError, r"^padwidth: -1 is not allowed; allowed: an integer >= 0"),
    (dict(gain="2"), TypeError, r"^gain: expected a number, got text '2'"),
])
def test_bad_parameters_name_the_parameter(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lacosmic(SIM.data, **{**KW, **kwargs})


@pytest.mark.parametrize("data,match", [
    (np.zeros((0, 5), np.float32), "data is empty"),
    (np.zeros(10, np.float32), "data must be a 2-D array"),
    (np.zeros((3, 4, 5), np.float32), "data must be a 2-D array"),
    (np.array([["a", "b"]]), "data must hold real numbers"),
    (np.zeros((4, 4), complex), "data must hold real numbers"),
])
def test_bad_arrays(data, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lacosmic(data)


def test_empty_dask_array_is_rejected_lazily_without_compute():
    with pytest.raises(ValueError, match="data is empty"):
        lacosmic(da.zeros((0, 10), chunks=5))


@pytest.mark.parametrize("name", ["inmask", "inbkg", "invar"])
def test_shape_mismatch_names_the_array(name):
    with pytest.raises(ValueError, match=f"{name} has shape \\(5, 5\\) but data has shape"):
        lacosmic(SIM.data, **{name: np.zeros((5, 5), np.float32)})


def test_nan_and_inf_pixels_are_masked_not_flagged():
    data = SIM.data.copy()
    data[10, 10] = np.nan
    data[20:22, :] = np.inf
    mask, clean = lacosmic(data, **KW)
    assert not mask[10, 10] and not mask[20:22].any()
    assert np.isnan(clean[10, 10]) and np.isinf(clean[20:22]).all()
    # elsewhere the frame is still cleaned: most true CRs far from the bad pixels are found
    far = SIM.crmask.copy()
    far[5:30] = False
    assert (mask & far).sum() > 0.5 * far.sum()


def test_big_endian_input_gives_the_same_result():
    big = SIM.data.astype(">f4")
    ref = lacosmic(SIM.data, **KW)
    got = lacosmic(big, **KW)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert big.dtype.byteorder == ">"  # caller's array untouched
    ints = np.round(SIM.data).astype(">i4")
    assert lacosmic(ints, **KW)[0].shape == ints.shape


def test_input_array_is_not_modified():
    data = SIM.data.copy()
    lacosmic(data, **KW)
    np.testing.assert_array_equal(data, SIM.data)


def test_ccddata_in_ccddata_out():
    premask = np.zeros(SIM.data.shape, bool)
    premask[0, 0] = True
    ccd = CCDData(SIM.data.copy(), unit=u.adu, mask=premask, meta={"OBJECT": "sim"})
    out = lacosmic(ccd, **KW)
    mask, clean = lacosmic(SIM.data, inmask=premask, **KW)
    assert isinstance(out, CCDData)
    assert out.unit == u.adu and out.meta["OBJECT"] == "sim"
    np.testing.assert_array_equal(out.data, clean)
    np.testing.assert_array_equal(out.mask, mask | premask)
    np.testing.assert_array_equal(ccd.data, SIM.data)  # input untouched


def test_drop_in_name_and_positional_signature():
    import inspect
    import astroscrappy
    ours = list(inspect.signature(detect_cosmics).parameters.items())
    ref = astroscrappy.detect_cosmics.__doc__.split("\n")[0]
    names = [n for n, _ in ours]
    assert names[:20] == ["data", "inmask", "inbkg", "invar", "sigclip", "sigfrac", "objlim",
                          "gain", "readnoise", "satlevel", "niter", "sepmed", "cleantype",
                          "fsmode", "psfmodel", "psffwhm", "psfsize", "psfk", "psfbeta",
                          "verbose"]
    defaults = {n: p.default for n, p in ours}
    for token in ref[ref.index("(") + 1:].replace(")", "").split(","):
        if "=" in token:
            k, v = (s.strip() for s in token.split("="))
            assert repr(defaults[k]).strip("'") == v.strip("'"), k


def test_padwidth_finds_crs_on_the_border():
    rng = np.random.default_rng(1)
    data = rng.normal(300, 5, (80, 80)).astype(np.float32)
    data[0, 40] += 2000
    data[40, 79] += 2000
    plain, _ = lacosmic(data, readnoise=5.0)
    padded, clean = lacosmic(data, readnoise=5.0, padwidth=4)
    assert not plain[0, 40] and not plain[40, 79]
    assert padded[0, 40] and padded[40, 79]
    assert clean[0, 40] < 400 and clean[40, 79] < 400
