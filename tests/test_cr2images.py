"""cr2images: parity with teareduce 0.7.9, chunking independence, kernels
against scipy/numpy, CCDData, the group method, bad input and the CLI."""

import os
import subprocess
import sys
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from shared_data import SHARED
from crdask import cr2images
from crdask.cosmic.cr2images import PARAMS, detect_group
from crdask.cosmic.cr2images_core import diff_stats, diff_stats_dask, needed_ranks
from crdask.cosmic.params import ParamError
from crdask.cosmic.registry import get_method
from crdask.kernels.components import label4, medfilt_rect, tail_components, union_pairs
from crdask.simulate import simulate_frame

from teareduce.cosmicrays import cr2images as tea_cr2images  # noqa: E402 (test extra)
from teareduce.sliceregion import SliceRegion2D  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPRAT = SHARED / "sprat-lhs6328"


def make_pair(shape=(240, 300), seed=1, ioffx=0, ioffy=0, noise=4.0):
    """Two exposures of one simulated scene (same sky and stars), each with
    its own noise and its own CRs; the second is shifted so that
    ``data1[y, x]`` lies on ``data2[y - ioffy, x - ioffx]``."""
    ny, nx = shape
    pad = max(abs(ioffx), abs(ioffy))
    scene = simulate_frame((ny + 2 * pad, nx + 2 * pad), seed=seed, n_cosmics=0).clean
    rng = np.random.default_rng(seed + 1000)
    out = []
    for k, (oy, ox) in enumerate(((0, 0), (ioffy, ioffx))):
        crs = simulate_frame(shape, seed=seed * 10 + k + 1, n_stars=0, n_saturated=0)
        img = scene[pad + oy:pad + oy + ny, pad + ox:pad + ox + nx] \
            + (crs.data - crs.clean) + rng.normal(0, noise, shape)
        out.append(img.astype(np.float32))
    return out


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for k, (o, t) in enumerate(zip(ours, theirs)):
        if k >= 2:      # masks: ours bool, teareduce int 0/1
            assert o.dtype == bool
            t = t.astype(bool)
        np.testing.assert_array_equal(o, t, err_msg=f"output {k}")


@pytest.fixture(scope="module")
def pair():
    return make_pair()


# ---------------------------------------------------------------------------
# Parity with teareduce.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {},
    {"maxsize": 4},
    {"tsigma_peak": 6, "tsigma_tail": 2.5},
    {"tsigma_peak": 2, "tsigma_tail": 4},        # peaks need not lie in tails
])
def test_matches_teareduce(pair, kw):
    a, b = pair
    ours = cr2images(a, b, return_masks=True, **kw)
    theirs = tea_cr2images(a, b, return_masks=True, **kw)
    assert_same(ours, theirs)
    assert ours[2].sum() > 20 and ours[3].sum() > 20       # CRs found both ways
    assert not np.array_equal(ours[0], a)


@pytest.mark.parametrize("ioffx, ioffy", [(3, -2), (-5, 4), (0, 7)])
def test_matches_teareduce_offsets(ioffx, ioffy):
    a, b = make_pair(seed=2, ioffx=ioffx, ioffy=ioffy)
    ours = cr2images(a, b, ioffx=ioffx, ioffy=ioffy, return_masks=True)
    theirs = tea_cr2images(a, b, ioffx=ioffx, ioffy=ioffy, return_masks=True)
    assert_same(ours, theirs)
    # The strip of data1 outside the overlap is never touched.
    strip = slice(0, ioffx) if ioffx > 0 else slice(a.shape[1] + ioffx, None)
    assert not ours[2][:, strip].any()
    # A registered pair: few false detections on the stars.
    assert ours[2].sum() < 3 * ours[3].sum() + 200


def test_matches_teareduce_regions(pair):
    a, b = pair
    skipped = [SliceRegion2D("[1:100,1:120]", mode="fits"),
               SliceRegion2D(np.s_[150:200, 180:260], mode="python")]
    region = SliceRegion2D("[50:250,30:200]", mode="fits")
    full = cr2images(a, b, return_masks=True)
    for kw, ours_kw in (({"list_skipped_regions": skipped},
                         {"list_skipped_regions": ["[1:100,1:120]", np.s_[150:200, 180:260]]}),
                        ({"image_region": region}, {"image_region": region}),
                        ({"image_region": region}, {"image_region": "[50:250,30:200]"})):
        theirs = tea_cr2images(a, b, return_masks=True, **kw)
        ours = cr2images(a, b, return_masks=True, **ours_kw)
        assert_same(ours, theirs)
        assert ours[2].sum() < full[2].sum()


def test_matches_teareduce_single_mode(pair):
    a, _ = pair
    for size in ((5, 5), (4, 7), 3):
        ours = cr2images(a, median_size=size, return_masks=True)
        theirs = tea_cr2images(a, median_size=size, return_masks=True)
        assert_same(ours, theirs)
        assert ours[2].sum() > 20 and not ours[3].any()
    # single_mode with two exposures: only data1 is cleaned.
    a, b = pair
    ours = cr2images(a, b, single_mode=True, return_masks=True)
    assert_same(ours, tea_cr2images(a, b, single_mode=True, return_masks=True))
    np.testing.assert_array_equal(ours[1], b)


def _sprat(k):
    with fits.open(SPRAT / f"v_e_20180810_12_{k}_0_0.fits.gz") as h:
        return np.asarray(h[0].data, dtype=np.float32) - np.float32(917)


@pytest.mark.parametrize("kw", [{}, {"maxsize": 30, "tsigma_peak": 8}])
def test_matches_teareduce_sprat(kw):
    a, b = _sprat(1), _sprat(2)
    ours = cr2images(a, b, return_masks=True, **kw)
    theirs = tea_cr2images(a, b, return_masks=True, **kw)
    assert_same(ours, theirs)
    # ~60-75 CR clusters per frame (shared data README).
    n1 = ndimage.label(ours[2])[1]
    assert 20 <= n1 <= 400


def test_return_values(pair):
    a, b = pair
    two = cr2images(a, b)
    assert len(two) == 2 and all(x.dtype == np.float32 for x in two)
    np.testing.assert_array_equal(two[0], cr2images(a, b, return_masks=True)[0])


# ---------------------------------------------------------------------------
# Dask == numpy, bit for bit.
# ---------------------------------------------------------------------------

def _chunks(draw, n):
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=4))))
    edges = [0] + cuts + [n]
    return tuple(e - s for s, e in zip(edges, edges[1:]))


@st.composite
def chunkings(draw, shape):
    return _chunks(draw, shape[0]), _chunks(draw, shape[1])


@pytest.fixture(scope="module")
def small_pair():
    return make_pair(shape=(90, 110), seed=5, ioffx=2, ioffy=-3)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_dask_equals_numpy(small_pair, data):
    a, b = small_pair
    kw = data.draw(st.sampled_from([
        {}, {"ioffx": 2, "ioffy": -3}, {"maxsize": 3}, {"ioffx": 2, "ioffy": -3, "maxsize": 8},
        {"image_region": "[10:80,5:60]"}, {"list_skipped_regions": ["[1:30,1:90]"]},
        {"tsigma_peak": 3, "tsigma_tail": 1.5}]))
    c1, c2 = data.draw(chunkings(a.shape)), data.draw(chunkings(a.shape))
    want = cr2images(a, b, return_masks=True, **kw)
    got = dask.compute(*cr2images(da.from_array(a, chunks=c1), da.from_array(b, chunks=c2),
                                  return_masks=True, **kw), scheduler="sync")
    for w, g in zip(want, got):
        assert w.dtype == g.dtype
        np.testing.assert_array_equal(w, g)


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_dask_equals_numpy_single_mode(small_pair, data):
    a, _ = small_pair
    size = data.draw(st.sampled_from([(3, 3), (5, 4), (2, 6)]))
    chunks = data.draw(chunkings(a.shape))
    want = cr2images(a, median_size=size, return_masks=True)
    got = dask.compute(*cr2images(da.from_array(a, chunks=chunks), median_size=size,
                                  return_masks=True), scheduler="sync")
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_dask_is_lazy_and_long_tracks_cross_chunks():
    # A CR track crossing many small chunks must be one component: with
    # maxsize it is dropped whole in both paths, without it kept whole.
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, (64, 64)).astype(np.float32)
    b = rng.normal(0, 1, (64, 64)).astype(np.float32)
    a[30, 2:60] += 100
    for maxsize, expect in ((None, True), (40, False)):
        out = cr2images(da.from_array(a, chunks=7), da.from_array(b, chunks=9),
                        maxsize=maxsize, return_masks=True)
        assert all(isinstance(x, da.Array) for x in out)
        m = out[2].compute()
        assert bool(m[30, 2:60].all()) is expect
        np.testing.assert_array_equal(m, cr2images(a, b, maxsize=maxsize,
                                                   return_masks=True)[2])


# ---------------------------------------------------------------------------
# Kernels and statistics against scipy / numpy.
# ---------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(ny=st.integers(1, 40), nx=st.integers(1, 40), p=st.floats(0.05, 0.95),
       seed=st.integers(0, 2 ** 16))
def test_label4_equals_scipy(ny, nx, p, seed):
    m = np.random.default_rng(seed).random((ny, nx)) < p
    labels, n = label4(m)
    want, nwant = ndimage.label(m)
    assert n == nwant
    np.testing.assert_array_equal(labels, want)


@settings(max_examples=30, deadline=None)
@given(ny=st.integers(1, 30), nx=st.integers(1, 30), sy=st.integers(1, 9),
       sx=st.integers(1, 9), seed=st.integers(0, 2 ** 16))
def test_medfilt_rect_equals_scipy(ny, nx, sy, sx, seed):
    x = np.random.default_rng(seed).normal(0, 10, (ny, nx)).astype(np.float32)
    x = np.round(x)      # ties too
    np.testing.assert_array_equal(medfilt_rect(x, sy, sx),
                                  ndimage.median_filter(x, size=(sy, sx), mode="reflect"))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2 ** 16), ties=st.booleans())
def test_stats_equal_numpy(n, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_cauchy(n).astype(np.float32)
    if ties:
        x = np.round(x)
    median, std = diff_stats(x.reshape(1, n))
    q25, q75 = np.percentile(x, [25, 75])
    assert median == float(np.median(x)) + 0.0
    assert std == 0.7413 * (q75 - q25)
    chunked = diff_stats_dask(da.from_array(x.reshape(1, n), chunks=(1, max(1, n // 3))))
    assert chunked.compute() == (median, std)
    assert all(0 <= r < n for r in needed_ranks(n))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), pairs=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)),
                                             max_size=80))
def test_union_pairs_equals_reference(n, pairs):
    pairs = [(i % n, j % n) for i, j in pairs]
    a = np.array([i for i, _ in pairs], np.int64)
    b = np.array([j for _, j in pairs], np.int64)
    root = union_pairs(n, a, b)
    # Reference: flood fill over the undirected graph; root = smallest member.
    adj = {k: set() for k in range(n)}
    for i, j in pairs:
        adj[i].add(j)
        adj[j].add(i)
    want = np.empty(n, np.int64)
    seen = set()
    for k in range(n):
        if k in seen:
            continue
        comp, todo = {k}, [k]
        while todo:
            for m in adj[todo.pop()] - comp:
                comp.add(m)
                todo.append(m)
        seen |= comp
        want[list(comp)] = min(comp)
    np.testing.assert_array_equal(root, want)


def test_stats_skip_nonfinite():
    x = np.array([[1, 2, np.nan, 3, np.inf, 10]], np.float32)
    median, _ = diff_stats(x)
    assert median == float(np.median([1, 2, 3, 10]))
    with pytest.raises(ValueError, match="no finite pixel"):
        diff_stats(np.full((2, 2), np.nan, np.float32))


def test_tail_components_reference():
    rng = np.random.default_rng(9)
    diff = rng.normal(0, 1, (50, 60)).astype(np.float32)
    useful = rng.random((50, 60)) < 0.7
    labels, n, seeded, size = tail_components(diff, useful, 0.5, 1.8, True)
    want, nw = ndimage.label(diff > 0.5)
    assert n == nw
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(size[1:], np.bincount(want.ravel(), minlength=n + 1)[1:])
    seeds = np.unique(want[(diff > 1.8) & useful])
    np.testing.assert_array_equal(np.nonzero(seeded)[0], seeds[seeds > 0])


# ---------------------------------------------------------------------------
# Bad pixels, CCDData, the group method.
# ---------------------------------------------------------------------------

def test_nan_pixels_never_flagged(pair):
    a, b = (x.copy() for x in pair)
    m1 = cr2images(a, b, return_masks=True)[2]
    ys, xs = np.nonzero(m1)
    a[ys[:5], xs[:5]] = np.nan
    c1, c2, n1, n2 = cr2images(a, b, return_masks=True)
    assert not n1[ys[:5], xs[:5]].any()
    assert np.isnan(c1[ys[:5], xs[:5]]).all()
    assert not n2[ys[:5], xs[:5]].any()


def test_ccddata():
    a, b = make_pair(seed=3, ioffx=2, ioffy=1)
    bad = np.zeros(a.shape, bool)
    want = cr2images(a, b, ioffx=2, ioffy=1, return_masks=True)
    ys, xs = np.nonzero(want[2])
    bad[ys[0], xs[0]] = True
    ua, ub = np.full(a.shape, 1.0), np.full(b.shape, 2.0)
    ca = CCDData(a, unit="adu", mask=bad, uncertainty=StdDevUncertainty(ua))
    cb = CCDData(b, unit="adu", uncertainty=StdDevUncertainty(ub))
    oa, ob, ma, mb = cr2images(ca, cb, ioffx=2, ioffy=1, return_masks=True)
    assert isinstance(oa, CCDData) and isinstance(ob, CCDData)
    assert not ma[ys[0], xs[0]] and oa.mask[ys[0], xs[0]]      # bad: kept, not a CR
    assert oa.data[ys[0], xs[0]] == a[ys[0], xs[0]]
    np.testing.assert_array_equal(oa.mask, bad | ma)
    np.testing.assert_array_equal(oa.uncertainty.array, np.where(ma, 2.0, 1.0))
    np.testing.assert_array_equal(ob.uncertainty.array, np.where(mb, 1.0, 2.0))
    # The bad pixel is left out of the statistics: as NaN in the arrays.
    nan = cr2images(np.where(bad, np.float32(np.nan), a), b, ioffx=2, ioffy=1,
                    return_masks=True)
    np.testing.assert_array_equal(ob.data, nan[1])
    np.testing.assert_array_equal(oa.data, np.where(bad, a, nan[0]))
    np.testing.assert_array_equal(ma, nan[2])
    np.testing.assert_array_equal(mb, nan[3])
    assert abs(int(ma.sum()) - int(want[2].sum())) < 10


def test_group_of_two_equals_pair(pair):
    a, b = pair
    m = get_method("cr2images", "group")
    assert m.min_members == 2 and m.params is PARAMS
    bad = np.zeros(a.shape, bool)
    want = cr2images(a, b, return_masks=True)
    ys, xs = np.nonzero(want[3])
    bad[ys[:3], xs[:3]] = True                       # bad in member 2 at its CRs
    r = detect_group([a, b], PARAMS.validate({}), bad=[None, bad])
    assert not r.crmask[1][bad].any()
    np.testing.assert_array_equal(r.clean[1][bad], b[bad])
    np.testing.assert_array_equal(r.crmask[0], want[2])
    assert r.header["CRNFIX"][0] == sum(int(x.sum()) for x in r.crmask)


def test_group_of_three_uses_median_of_others():
    a, b = make_pair(seed=7)
    c, _ = make_pair(seed=8)
    frames = [a, b, (a + b) / 2]
    frames[2][40, 40] += 5000
    r = detect_group(frames, PARAMS.validate({}))
    assert len(r.clean) == 3 and r.crmask[2][40, 40]
    for k in range(3):
        others = np.median(np.stack([f for j, f in enumerate(frames) if j != k]), axis=0)
        want = cr2images(frames[k], others.astype(np.float32), single_mode=True,
                         return_masks=True)
        np.testing.assert_array_equal(r.crmask[k], want[2])
        np.testing.assert_array_equal(r.clean[k], want[0])
    with pytest.raises(ParamError, match="ioffx"):
        detect_group(frames, PARAMS.validate({"ioffx": 1}))
    with pytest.raises(ParamError, match="single_mode"):
        detect_group(frames[:2], PARAMS.validate({"single_mode": True}))


# ---------------------------------------------------------------------------
# Bad input: one line naming the parameter.
# ---------------------------------------------------------------------------

def _one_line(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text
    for w in words:
        assert w in text


def test_bad_input(pair):
    a, b = pair
    with pytest.raises(ValueError) as e:
        cr2images(a, b[:, :-1])
    _one_line(e, "data2", "shape", "data1")
    for kw, name in (({"ioffx": a.shape[1]}, "ioffx"), ({"ioffy": -a.shape[0]}, "ioffy")):
        with pytest.raises(ParamError) as e:
            cr2images(a, b, **kw)
        _one_line(e, name, "no overlap")
    with pytest.raises(ParamError) as e:
        cr2images(a, b, image_region="[1:10,1:10]", list_skipped_regions=["[1:5,1:5]"])
    _one_line(e, "image_region", "list_skipped_regions")
    for kw, name in (({"image_region": "[0:10,1:10]"}, "image_region"),
                     ({"image_region": "1:10,1:10"}, "image_region"),
                     ({"list_skipped_regions": ["[5:1,1:3]"]}, "list_skipped_regions"),
                     ({"tsigma_peak": 0}, "tsigma_peak"), ({"maxsize": 0}, "maxsize"),
                     ({"ioffx": 1.5}, "ioffx"),
                     ({"image_region": "[400:500,1:10]"}, "image_region"),
                     ({"list_skipped_regions": "[1:5,1:5];[1:5,300:310]"},
                      "list_skipped_regions")):
        with pytest.raises(ParamError) as e:
            cr2images(a, b, **kw)
        _one_line(e, name)
    with pytest.raises(ParamError) as e:
        cr2images(a)
    _one_line(e, "median_size")
    with pytest.raises(ParamError) as e:
        cr2images(a, median_size=3, ioffx=1)
    _one_line(e, "ioffx")
    with pytest.raises(ParamError) as e:
        cr2images(a, median_size=(3, 0))
    _one_line(e, "median_size")


# ---------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------

def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "crdask", "cr2images", *args], cwd=cwd,
                          env=env, capture_output=True, text=True)


def test_cli_pair_and_single(tmp_path):
    f1, f2 = (SPRAT / f"v_e_20180810_12_{k}_0_0.fits.gz" for k in (1, 2))
    before = [os.stat(f).st_mtime_ns for f in (f1, f2)]
    out = tmp_path / "clean"
    r = _run([str(f1), str(f2), "--out-dir", str(out), "--maxsize", "40",
              "--list-skipped-regions", "[1:20,1:254];[1000:1024,1:254]"], tmp_path)
    assert r.returncode == 0, r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = fits.getdata(f1).astype(np.float32)
        b = fits.getdata(f2).astype(np.float32)
    want = cr2images(a, b, maxsize=40, return_masks=True,
                     list_skipped_regions=["[1:20,1:254]", "[1000:1024,1:254]"])
    for k, name in enumerate(("v_e_20180810_12_1_0_0", "v_e_20180810_12_2_0_0")):
        with fits.open(out / f"{name}_crclean.fits") as h:
            assert h[0].data.dtype == np.dtype(">f4")
            np.testing.assert_array_equal(h[0].data, want[k])
            np.testing.assert_array_equal(h["MASK"].data, want[k + 2].astype(np.uint8))
            assert h[0].header["CRNFIX"] == int(want[k + 2].sum()) > 0
            hist = "\n".join(h[0].header["HISTORY"])
            assert "cosmics cr2images" in hist and "maxsize=40" in hist
            assert "[1000:1024,1:254]" in hist and "v_e_20180810_12_2_0_0" in hist
            assert h[0].header["OBSTYPE"]                  # input header kept
    assert not [p for p in os.listdir(out) if not p.endswith("_crclean.fits")]
    assert [os.stat(f).st_mtime_ns for f in (f1, f2)] == before

    # Existing outputs are set aside without --overwrite; then replaced.
    r = _run([str(f1), str(f2), "--out-dir", str(out)], tmp_path)
    assert r.returncode == 2 and "exists" in r.stderr
    # One file: its median filter is the companion.
    r = _run([str(f1), "--out-dir", str(out), "--median-size", "5,5", "--suffix", "_s"],
             tmp_path)
    assert r.returncode == 0, r.stderr
    with fits.open(out / "v_e_20180810_12_1_0_0_s.fits") as h:
        np.testing.assert_array_equal(h[0].data, cr2images(a, median_size=(5, 5))[0])


def test_cli_errors(tmp_path):
    f1 = SPRAT / "v_e_20180810_12_1_0_0.fits.gz"
    f2 = SPRAT / "v_e_20180810_12_2_0_0.fits.gz"
    r = _run([str(f1), "--out-dir", str(tmp_path)], tmp_path)
    assert r.returncode == 1 and "median_size" in r.stderr
    r = _run([str(f1), str(f2), "--out-dir", str(tmp_path), "--ioffx", "5000"], tmp_path)
    assert r.returncode == 1 and "ioffx" in r.stderr and "no overlap" in r.stderr
    r = _run([str(f1), str(SHARED / "kpno-m51/dev_pix_m51_B_600s.fits"),
              "--out-dir", str(tmp_path)], tmp_path)
    assert r.returncode == 2 and "shape" in r.stderr
    r = _run([str(f1), str(tmp_path / "missing.fits"), "--out-dir", str(tmp_path)],
             tmp_path)
    assert r.returncode == 2 and "missing.fits" in r.stderr and "no such file" in r.stderr
    assert not list(tmp_path.glob("*.fits"))


def test_dask_on_local_cluster_of_processes(small_pair):
    # The graph (delayed statistics, border merging, numba kernels) runs on
    # worker processes and gives the numpy result.
    from distributed import Client, LocalCluster
    a, b = small_pair
    want = cr2images(a, b, ioffx=2, ioffy=-3, maxsize=10, return_masks=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        got = client.compute(list(cr2images(da.from_array(a, chunks=(31, 40)),
                                            da.from_array(b, chunks=(45, 37)),
                                            ioffx=2, ioffy=-3, maxsize=10,
                                            return_masks=True)), sync=True)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_clean_pair_mask_hdu(tmp_path):
    from crdask.pipeline.pairs import clean_pair
    a, b = make_pair(seed=11)
    want = cr2images(a, b, return_masks=True)
    ys, xs = np.nonzero(want[2])
    bad = np.zeros(a.shape, np.uint8)
    bad[ys[:4], xs[:4]] = 1
    paths = []
    for k, img in enumerate((a, b)):
        path = tmp_path / f"exp{k}.fits"
        fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(bad, name="BPM")]).writeto(path)
        paths.append(path)
    res = clean_pair(paths[0], paths[1], tmp_path / "out", {"tsigma_peak": 9},
                     mask_hdu="BPM")
    assert [r["ncr"] > 0 for r in res] == [True, True]
    with fits.open(res[0]["output"]) as h:
        assert not h["MASK"].data[bad == 1].any()
        np.testing.assert_array_equal(h[0].data[bad == 1], a[bad == 1])
        assert h[0].header["CRNFIX"] == res[0]["ncr"]
    nan = np.where(bad == 1, np.float32(np.nan), a), np.where(bad == 1, np.float32(np.nan), b)
    ref = cr2images(*nan, tsigma_peak=9, return_masks=True)
    with fits.open(res[1]["output"]) as h:
        np.testing.assert_array_equal(h["MASK"].data, (ref[3] & (bad == 0)).astype(np.uint8))


def test_clean_pair_single_mode_writes_first_only(tmp_path):
    from crdask.pipeline.pairs import clean_pair
    a, b = make_pair(seed=12, shape=(64, 80))
    paths = [tmp_path / "p.fits", tmp_path / "q.fits"]
    for path, img in zip(paths, (a, b)):
        fits.PrimaryHDU(img).writeto(path)
    res = clean_pair(paths[0], paths[1], tmp_path / "out", {"single_mode": True})
    assert [os.path.basename(r["output"]) for r in res] == ["p_crclean.fits"]
    assert os.listdir(tmp_path / "out") == ["p_crclean.fits"]
    with fits.open(res[0]["output"]) as h:
        np.testing.assert_array_equal(h[0].data, cr2images(a, b, single_mode=True)[0])
