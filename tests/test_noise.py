"""Gain and read noise by the photon-transfer method, on frames with a known truth."""

import math

import dask.array as da
import numpy as np
import pytest

from crdask.io.sections import parse_section
from crdask.calib.noise import (GainReadnoise, compare_with_header, gain_readnoise,
                                robust_variance)


def make_frames(seed, shape, gain, readnoise, levels, n_bias, *, bias=1000.0, prnu=0.01,
                bias_pattern=2.0, quantize=True):
    """Flats (one per entry of ``levels``, ADU above bias) and biases in ADU.

    electrons = Poisson(level * gain * response); ADU = electrons / gain +
    bias + fixed bias pattern + Normal(0, readnoise / gain), rounded to uint16
    like an ADC (so the measurable read noise is sqrt(rn^2 + gain^2 / 12)).
    """
    rng = np.random.default_rng(seed)
    response = 1.0 + prnu * rng.standard_normal(shape)
    pattern = bias + rng.normal(0.0, bias_pattern, shape)

    def frame(level):
        e = rng.poisson(level * gain * response) if level else 0.0
        adu = pattern + e / gain + rng.normal(0.0, readnoise / gain, shape)
        return np.round(adu).astype(np.uint16) if quantize else adu

    return [frame(v) for v in levels], [frame(0) for _ in range(n_bias)]


def measurable_rn(gain, readnoise, quantize=True):
    return math.sqrt(readnoise ** 2 + (gain ** 2 / 12.0 if quantize else 0.0))


# ---------------------------------------------------------------------------
# recovery of the truth
# ---------------------------------------------------------------------------

CASES = [
    # shape, gain e-/ADU, read noise e-, flat levels (ADU above bias), biases
    ((1024, 1024), 1.1, 3.6, [15000, 15300], 2),                      # WHT-like
    ((1024, 1024), 2.45, 7.0, [6000, 6100], 2),                       # SPRAT-like
    ((256, 384), 0.8, 2.5, [30000, 29500, 12000, 12400, 3000, 3050], 4),
    ((300, 200), 4.0, 9.0, [9000, 9100, 9200, 9300, 9400, 9500], 6),  # faint in e-
]


@pytest.mark.parametrize("shape,gain,rn,levels,n_bias", CASES)
def test_recovers_gain_and_readnoise(shape, gain, rn, levels, n_bias):
    flats, biases = make_frames(sum(shape) + len(levels), shape, gain, rn, levels, n_bias)
    res = gain_readnoise(flats, biases)
    assert isinstance(res, GainReadnoise)
    assert res.n_pairs == len(levels) // 2 == len(res.per_pair)
    expected_rn = measurable_rn(gain, rn)
    assert res.gain == pytest.approx(gain, rel=0.05)
    assert res.readnoise == pytest.approx(expected_rn, rel=0.05)
    # the quoted errors are honest: the truth lies within 4 sigma (+0.5 %)
    assert abs(res.gain - gain) < 4 * res.gain_err + 0.005 * gain
    assert abs(res.readnoise - expected_rn) < 4 * res.readnoise_err + 0.005 * expected_rn
    assert 0 < res.gain_err < 0.05 * gain and 0 < res.readnoise_err < 0.05 * rn
    tab = res.per_pair
    for col in ("flat1", "flat2", "bias1", "bias2", "level", "ratio", "var_flat_diff",
                "var_bias_diff", "gain", "gain_err", "readnoise", "readnoise_err", "npix"):
        assert col in tab.colnames
    assert np.all(np.abs(tab["gain"] / gain - 1) < 0.08)
    assert "e-/ADU" in str(res) and "flat pair" in str(res)


def test_large_frames_are_precise():
    """1024^2 frames, default region (512^2 pixels): better than 1 % from one pair."""
    flats, biases = make_frames(1, (1024, 1024), 1.5, 4.5, [20000, 20000], 2,
                                quantize=False)
    res = gain_readnoise(flats, biases)
    assert res.gain == pytest.approx(1.5, rel=0.01)
    assert res.readnoise == pytest.approx(4.5, rel=0.01)
    assert res.gain_err < 0.01 * 1.5


def test_level_mismatch_and_strong_prnu():
    """Flats 9 % apart with 3 % pixel response: a plain F1 - F2 would keep
    0.09 * 3 % of the pattern (gain 9 % low here); the scaled difference
    cancels it."""
    flats, biases = make_frames(2, (512, 512), 1.0, 4.0, [30000, 27400], 2, prnu=0.03)
    res = gain_readnoise(flats, biases)
    assert res.gain == pytest.approx(1.0, rel=0.05)
    assert res.per_pair["ratio"][0] == pytest.approx(27400 / 30000, rel=0.01)


def test_cosmic_rays_and_hot_pixels_are_clipped():
    flats, biases = make_frames(3, (512, 512), 2.0, 5.0, [10000, 10100], 2)
    rng = np.random.default_rng(3)
    for f in flats + biases:
        y, x = rng.integers(0, 512, (2, 400))
        f[y, x] = np.minimum(f[y, x].astype(np.int64) + 3000, 65535)
    res = gain_readnoise(flats, biases)
    assert res.gain == pytest.approx(2.0, rel=0.05)
    assert res.readnoise == pytest.approx(measurable_rn(2.0, 5.0), rel=0.05)


def test_robust_variance_unbiased_with_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 3.0, 400_000)
    x[:2000] += rng.uniform(50, 500, 2000)          # 0.5 % outliers
    v, n = robust_variance(x)
    assert v == pytest.approx(9.0, rel=0.01)
    assert 0.99 * x.size < n < x.size
    assert np.isnan(robust_variance([1.0])[0])


# ---------------------------------------------------------------------------
# pairing, regions, inputs
# ---------------------------------------------------------------------------

def test_automatic_pairing_by_level():
    levels = [12000, 3000, 30000, 12500, 29000, 3100, 50]   # shuffled; last unpaired
    flats, biases = make_frames(4, (128, 128), 1.2, 4.0, levels[:-1], 3)
    res = gain_readnoise(flats, biases)
    pairs = sorted(tuple(sorted((int(r["flat1"]), int(r["flat2"])))) for r in res.per_pair)
    assert pairs == [(0, 3), (1, 5), (2, 4)]
    # biases paired in order, flat pairs cycling over the bias pairs: only (0, 1)
    assert set(res.per_pair["bias1"]) == {0} and set(res.per_pair["bias2"]) == {1}
    assert list(res.per_pair["level"]) == sorted(res.per_pair["level"])


def test_explicit_pairs_region_and_dask_input():
    flats, biases = make_frames(5, (256, 256), 1.8, 6.0, [8000, 8100, 8200], 4)
    res = gain_readnoise(flats, biases, pairs=[(0, 2), (1, 2, 3, 2)],
                         region=parse_section("[33:224,33:224]"))
    assert [tuple(int(v) for v in r[:4]) for r in res.per_pair] == [(0, 2, 0, 1),
                                                                    (1, 2, 3, 2)]
    assert res.per_pair["npix"][0] > 0.99 * 192 * 192
    lazy = gain_readnoise([da.from_array(f, chunks=64) for f in flats],
                          [da.from_array(b, chunks=64) for b in biases],
                          region=(slice(32, 224), slice(32, 224)), pairs=[(0, 2), (1, 2, 3, 2)])
    assert lazy.gain == res.gain and lazy.readnoise == res.readnoise
    assert res.gain == pytest.approx(1.8, rel=0.05)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return make_frames(6, (64, 64), 1.5, 5.0, [20000, 20200], 2)


def test_error_too_few_frames(small):
    flats, biases = small
    with pytest.raises(ValueError, match="need at least 2 flats .* got 1"):
        gain_readnoise(flats[:1], biases)
    with pytest.raises(ValueError, match="need at least 2 biases .* got 1"):
        gain_readnoise(flats, biases[:1])


def test_error_shape_mismatch(small):
    flats, biases = small
    with pytest.raises(ValueError, match=r"flat 1 has shape \(64, 63\) but flat 0"):
        gain_readnoise([flats[0], flats[1][:, :63]], biases)
    with pytest.raises(ValueError, match=r"bias 1 has shape \(32, 64\)"):
        gain_readnoise(flats, [biases[0], biases[1][:32]])
    with pytest.raises(ValueError, match="not a 2-D image"):
        gain_readnoise([flats[0], flats[1][0]], biases)


def test_error_saturated(small):
    flats, biases = small
    hot = [f.astype(np.int64) + 40000 for f in flats]          # median ~61000 ADU
    with pytest.raises(ValueError, match=r"flat 0: median .* above 80% of satlevel "
                                         r"65535 ADU: too near saturation"):
        gain_readnoise(hot, biases)
    clipped = [f.copy() for f in flats]
    clipped[1][:20] = 40000
    with pytest.raises(ValueError, match=r"flat 1: .* at or above satlevel 40000 ADU"):
        gain_readnoise(clipped, biases, satlevel=40000)


def test_error_too_faint():
    flats, biases = make_frames(7, (128, 128), 2.0, 10.0, [4, 4], 2)
    with pytest.raises(ValueError, match="photon noise variance .* below the read noise "
                                         ".* too faint"):
        gain_readnoise(flats, biases)
    flats, biases = make_frames(8, (64, 64), 2.0, 5.0, [1000, 1000], 2)
    with pytest.raises(ValueError, match="flat 0: median .* not above the bias level .* "
                                         "too faint"):
        gain_readnoise([biases[0], biases[1]], flats)


def test_error_no_pairs_and_bad_pairs(small):
    flats, biases = small
    far = [flats[0], (flats[1].astype(np.int64) - 9000).astype(np.uint16)]
    with pytest.raises(ValueError, match=r"no two flats within 10% in level"):
        gain_readnoise(far, biases)
    with pytest.raises(ValueError, match="flat index 5 out of range 0..1"):
        gain_readnoise(flats, biases, pairs=[(0, 5)])
    with pytest.raises(ValueError, match="pairs a frame with itself"):
        gain_readnoise(flats, biases, pairs=[(0, 0)])
    with pytest.raises(ValueError, match="pairs: empty list"):
        gain_readnoise(flats, biases, pairs=[])


def test_errors_are_one_line(small):
    flats, biases = small
    for call in (lambda: gain_readnoise(flats[:1], biases),
                 lambda: gain_readnoise(flats, biases, region=parse_section("[1:80,1:10]"))):
        with pytest.raises(ValueError) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# header comparison
# ---------------------------------------------------------------------------

def _result(gain=1.5, rn=4.5):
    return GainReadnoise(gain=gain, gain_err=0.01, readnoise=rn, readnoise_err=0.02,
                         n_pairs=3, per_pair=None)


def test_compare_with_header():
    assert compare_with_header(_result(), 1.45, 4.8) == []          # within 10 %
    out = compare_with_header(_result(1.5, 4.5), 1.1, 3.6)
    assert out == [
        "gain: measured 1.5 ± 0.01 e-/ADU differs from the header value 1.1 e-/ADU "
        "by +36% (more than 10%)",
        "read noise: measured 4.5 ± 0.02 e- differs from the header value 3.6 e- "
        "by +25% (more than 10%)",
    ]
    out = compare_with_header(_result(1.5, 4.5), None, 6.0, tolerance=0.2)
    assert out == ["read noise: measured 4.5 ± 0.02 e- differs from the header value "
                   "6 e- by -25% (more than 20%)"]
    assert compare_with_header(_result(), None, None) == []
    out = compare_with_header(_result(), "n/a", 0.0)
    assert out[0].startswith("gain: header gain 'n/a' is not a number")
    assert out[1].startswith("read noise: header read noise 0.0 is not a positive number")


# ---------------------------------------------------------------------------
# the project's simulator
# ---------------------------------------------------------------------------

def test_simulated_raw_frames():
    """Raw bias/flat frames from ``crdask.simulate.raw`` (uint16 with an
    overscan strip, structured and drifting bias, vignetting, dust, 1 % PRNU,
    flats 1 % apart in level): measured in DATASEC, the header's GAIN/RDNOISE
    (the simulator's truth) are recovered and compare_with_header is silent."""
    import crdask.simulate.raw as raw
    det = raw.Detector(shape=(512, 512), gain=1.5, readnoise=4.5, seed=3)
    flats = [raw.simulate_raw("flat", det, seed=10 + i) for i in range(4)]
    biases = [raw.simulate_raw("bias", det, seed=20 + i) for i in range(2)]
    header = flats[0].header
    res = gain_readnoise([f.hdu.data for f in flats], [b.hdu.data for b in biases],
                         region=parse_section(header["DATASEC"]))
    assert res.n_pairs == 2
    assert res.gain == pytest.approx(det.gain, rel=0.05)
    assert res.readnoise == pytest.approx(measurable_rn(det.gain, det.readnoise), rel=0.05)
    assert compare_with_header(res, header["GAIN"], header["RDNOISE"]) == []
