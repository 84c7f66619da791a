"""Median-Minimum on simulated sets: recall of coincident hits, Dask chunks
== whole frame for every product, the group-method seam, bad input."""

import dask.array as da
import numpy as np
import pytest

from crdask import median_minimum
from crdask.cosmic.mm_stack import COMBINATIONS
from crdask.cosmic.params import ParamError
from crdask.cosmic.registry import get_method
from crdask.kernels.mm_stack import label8
from mm_sets import make_set

# A spline boundary held down at the sky by two fixed points (numina's
# usual practice: the simulated boundary alone is coarse at low signal when
# the field also holds bright stars), one pixel of global dilation.
SPLINE = dict(mm_fixed_points_in_boundary=[[0, 40], [300, 110]], dilation=1, mm_seed=1)
PIECEWISE = dict(mm_boundary_fit="piecewise", dilation=1, mm_seed=1,
                 mm_fixed_points_in_boundary=[[0, 40], [300, 110], [3000, 400], [60000, 3000]])


def false_features(mask, truth):
    lab, n = label8(np.ascontiguousarray(mask))
    hit = np.unique(lab[truth & mask])
    return n, n - int(np.count_nonzero(hit))


@pytest.fixture(scope="module")
def set3():
    return make_set(3, (256, 256), seed=3, pair=(0, 1))


@pytest.fixture(scope="module")
def set5():
    return make_set(5, (256, 256), seed=3, pair=(0, 1, 2))


def run(s, **kw):
    return median_minimum(s["frames"], gain=s["gain"], rnoise=s["rnoise"], bias=s["bias"],
                          mm_xy_offsets=s["offsets"], **kw)


def test_three_exposures_recall_of_double_hits(set3):
    d = set3["double"]
    assert d.sum() > 500
    # a plain median keeps every double hit: it is > 5 sigma above the others
    stack = np.stack(set3["frames"]).astype(np.float64)
    med = np.median(stack, axis=0)
    third = stack[2]
    sigma = np.sqrt(np.maximum(third, 0) + set3["rnoise"] ** 2)
    assert np.mean(med[d] - third[d] > 3 * sigma[d]) > 0.95
    r = run(set3, **SPLINE)
    m = np.asarray(r.masks["MEDIANCR"])
    recall = (m & d).sum() / d.sum()
    n, false = false_features(m, d)
    print(f"N=3: {d.sum()} double-hit pixels, recall {recall:.4f}, "
          f"{n} MEDIANCR features of which {false} hold no double hit")
    assert recall >= 0.95
    assert false < n / 2 and n >= 50
    assert m.sum() < 6 * d.sum()          # a sane boundary: not the whole frame
    # the cleaned median no longer holds them
    medcr = np.asarray(r.combination("mediancr")[0])
    clean_med = np.median(stack - set3["bias"], axis=0)
    assert np.mean(medcr[d] < clean_med[d]) > 0.95


def test_five_exposures_recall(set5):
    d = set5["double"]
    r = run(set5, mm_cr_coincidences=3, **PIECEWISE)
    m = np.asarray(r.masks["MEDIANCR"])
    recall = (m & d).sum() / d.sum()
    n, false = false_features(m, d)
    print(f"N=5 (hit in 3): recall {recall:.4f}, {n} features, {false} false")
    assert recall >= 0.95
    assert false < n / 2 and n >= 50
    assert m.sum() < 6 * d.sum()


def test_five_exposures_two_hits_are_in_meancrt():
    s = make_set(5, (192, 192), seed=4, pair=(0, 1))
    r = run(s, **PIECEWISE)
    d = s["double"]
    med = np.median(np.stack(s["frames"]), axis=0)
    # the median of 5 drops a CR in 2 of them: MEDIANCR need not hold it
    mt = np.asarray(r.masks["MEANCRT"])
    recall = (mt & d).sum() / d.sum()
    both = np.asarray(r.masks["CRMASK1"]) & np.asarray(r.masks["CRMASK2"])
    print(f"N=5 (hit in 2): MEANCRT recall {recall:.4f}, CRMASK1&2 {(both & d).sum() / d.sum():.4f}")
    assert recall >= 0.9
    assert np.isfinite(med).all()


@pytest.fixture(scope="module")
def small():
    return make_set(3, (96, 80), seed=5, n_double=12, n_single=15)


@pytest.mark.parametrize("kw", [PIECEWISE, dict(SPLINE, mm_dilation=1),
                                dict(PIECEWISE, crmethod="mmcosmic", use_auxmedian=False)])
def test_dask_chunks_equal_whole_frame(small, kw):
    whole = run(small, **kw)
    frames = [da.from_array(f, chunks=(23, 31)) for f in small["frames"]]
    lazy = median_minimum(frames, gain=small["gain"], rnoise=small["rnoise"],
                          mm_xy_offsets=small["offsets"], **kw)
    assert isinstance(lazy.masks["MEDIANCR"], da.Array)
    for name in whole.masks:
        np.testing.assert_array_equal(np.asarray(lazy.masks[name]), whole.masks[name])
    for name in ("min2d", "median2d", "mean2d", "max2d", "minimum", "var2d"):
        np.testing.assert_array_equal(np.asarray(lazy.stats[name]), whole.stats[name])
    for name in COMBINATIONS:
        a, b = lazy.combination(name), whole.combination(name)
        assert isinstance(a[0], da.Array)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), y)
    assert whole.masks["MEDIANCR"].any()


def test_group_method_seam(small):
    m = get_method("median_minimum", "group")
    assert m.min_members == 3
    e = [f * small["gain"] for f in small["frames"]]
    params = m.params.validate(PIECEWISE)
    res = m.detect(e, params, readnoise=[small["rnoise"]] * 3)
    assert len(res.clean) == len(res.crmask) == 3
    assert set(res.products) == {f"combined_{c}" for c in COMBINATIONS}
    for i in range(3):
        assert res.crmask[i].any()
        changed = res.clean[i] != e[i]
        assert not (changed & ~res.crmask[i]).any()
        # the exposure's own CR pixels that were cleaned came down
        own = changed & small["single"][i]
        assert own.sum() > 10
        assert (res.clean[i][own] < e[i][own]).mean() > 0.9
        assert res.clean[i][changed].sum() < e[i][changed].sum()


@pytest.mark.parametrize("frames, kw, text", [
    ("two", {}, "needs at least 3"),
    ("shapes", {}, "has shape (40, 41)"),
    ("three", {"mm_cr_coincidences": 3}, "mm_cr_coincidences: 3 with 3 exposures"),
    ("three", {"mm_xy_offsets": [[0, 0], [50, 0], [0, 0]]}, "leaves no overlap"),
    ("three", {"mm_bondary_fit": "spline"}, "did you mean mm_boundary_fit"),
    ("three", {"mm_boundary_fit": "piecewise"}, "needs at least two fixed points"),
])
def test_bad_input_one_line(frames, kw, text):
    rng = np.random.default_rng(0)
    f = [rng.normal(100, 3, (40, 40)).astype(np.float32) for _ in range(3)]
    if frames == "two":
        f = f[:2]
    elif frames == "shapes":
        f[2] = np.zeros((40, 41), np.float32)
    with pytest.raises(ParamError) as e:
        median_minimum(f, gain=1.0, rnoise=3.0, **kw)
    msg = str(e.value)
    assert text in msg and "\n" not in msg
