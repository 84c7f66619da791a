"""crdask's Median-Minimum against the real numina-crmasks (PyPI ``numina``),
run as users run it: its console script on its YAML, ``interactive: false``,
a headless matplotlib backend.

The inputs are in electrons with ``gain: 1`` and ``bias: 0`` (the SPRAT
frames are converted first: (raw - 917 ADU) x 2.45 e-/ADU), because crdask
deliberately gives L.A.Cosmic the read noise in electrons and compares
bias-subtracted exposures in ``CRMASKi``, where numina 0.40 does not; with
gain 1 and no bias those differences vanish and every mask must agree.
``maxplots: 0`` keeps numina from drawing one PDF page per feature (an
option crdask accepts and ignores).
"""

import numpy as np
import pytest

from crdask import median_minimum
from crdask.pipeline.crmasks import load_config, read_images
from mm_numina import jaccard, run_numina, write_frames, write_yaml
from mm_sets import make_set
from shared_data import SHARED

pytestmark = pytest.mark.slow

BASE = dict(crmethod="mm_lacosmic", mm_photon_distribution="poisson", mm_nbinom_shape=1000,
            mm_synthetic="median", la_cleantype="meanmask", la_fsmode="median",
            la_psfmodel="gauss", la_psffwhm_x=2.5, la_psffwhm_y=2.5, la_psfsize=7,
            apply_flux_factor_to="original", interactive=False, maxplots=0, mm_seed=7)


def both(tmp_path, frames, gain, rnoise, bias, req, **extra):
    paths = write_frames(frames, tmp_path / "in")
    y = write_yaml(tmp_path / "params.yaml", paths, gain, rnoise, bias, req)
    theirs = run_numina(y, tmp_path / "numina")
    cfg = load_config(y)
    ours = median_minimum(read_images(cfg), gain=cfg.gain, rnoise=cfg.rnoise, bias=cfg.bias,
                          **{**cfg.params, **extra})
    return ours, theirs, (cfg, y)


@pytest.mark.parametrize("n", [3, 5])
def test_piecewise_masks_identical_simulated(tmp_path, n):
    s = make_set(n, (160, 160), seed=11, pair=(0, 1))
    req = dict(BASE, mm_boundary_fit="piecewise", mm_xy_offsets=s["offsets"],
               mm_fixed_points_in_boundary=[[0, 40], [300, 110], [3000, 400], [60000, 3000]])
    ours, theirs, _ = both(tmp_path, s["frames"], s["gain"], s["rnoise"], s["bias"], req)
    assert theirs["MEDIANCR"].sum() > 50
    assert set(theirs) == set(ours.masks)
    for name in theirs:
        np.testing.assert_array_equal(np.asarray(ours.masks[name]), theirs[name], err_msg=name)
    # numina's combined images, variances and maps
    from astropy.io import fits
    for comb in ("mean", "median", "min", "mediancr", "meancrt", "meancr", "meancr2"):
        mine = ours.combination(comb)
        with fits.open(tmp_path / "numina" / f"combined_{comb}.fits") as h:
            for k, ext in enumerate(("PRIMARY", "VARIANCE", "MAP")):
                np.testing.assert_array_equal(np.asarray(mine[k]), h[ext].data,
                                              err_msg=f"{comb} {ext}")


def test_piecewise_masks_identical_sprat(tmp_path):
    from astropy.io import fits
    frames = []
    for i in (1, 2, 3):
        raw = fits.getdata(SHARED / f"sprat-lhs6328/v_e_20180810_12_{i}_0_0.fits.gz")
        frames.append(((raw.astype(np.float64) - 917.0) * 2.45).astype(np.float32))
    req = dict(BASE, mm_boundary_fit="piecewise", dilation=1,
               mm_fixed_points_in_boundary=[[0, 60], [500, 150], [5000, 600], [80000, 8000]])
    ours, theirs, _ = both(tmp_path, frames, 1.0, 7.0, 0.0, req)
    print({k: int(v.sum()) for k, v in theirs.items()})
    assert theirs["MEDIANCR"].sum() > 0 and theirs["MEANCRT"].sum() > 100
    for name in theirs:
        if name != "MEANCR":
            np.testing.assert_array_equal(ours.masks[name], theirs[name], err_msg=name)
    # With dilation > 0 numina 0.40 skips the dilation of MEANCR but reuses
    # the dilated mask left over from the last exposure, so its MEANCR also
    # holds CRMASK3; crdask's MEANCR is what numina documents (no dilation).
    np.testing.assert_array_equal(ours.masks["MEANCR"] | ours.masks["CRMASK3"],
                                  theirs["MEANCR"])


def test_spline_same_seed_close(tmp_path):
    from numina.array.crmasks.display_hist2d import display_hist2d

    s = make_set(3, (160, 160), seed=12, pair=(0, 1))
    req = dict(BASE, mm_boundary_fit="spline", mm_knots_splfit=4)
    # crdask's own stream (parallel blocks; the same YAML as numina's)
    ours, theirs, (cfg, _) = both(tmp_path, s["frames"], s["gain"], s["rnoise"], s["bias"], req)
    jac = {name: jaccard(np.asarray(ours.masks[name]), theirs[name]) for name in theirs}
    print("Jaccard (mm_rng=blocks, seed 7)", jac)
    # One seed of a different stream is one draw of the sampling noise:
    # numina's own stream with other seeds falls below 0.95 against its
    # seed 7 about a third of the time on this 160x160 set. So the bar is
    # on the median over the seeds 7..14 of crdask's stream against
    # numina's seed-7 masks (and each seed is printed).
    frames = read_images(cfg)
    per_seed = []
    for seed in range(7, 15):
        r = ours if seed == 7 else median_minimum(
            frames, gain=cfg.gain, rnoise=cfg.rnoise, bias=cfg.bias,
            **{**cfg.params, "mm_seed": seed})
        per_seed.append([jaccard(np.asarray(r.masks[k]), theirs[k])
                         for k in ("MEDIANCR", "MEANCRT")])
    med = np.median(per_seed, axis=0)
    print("Jaccard per seed 7..14 (MEDIANCR, MEANCRT):", np.round(per_seed, 3).tolist(),
          "median", np.round(med, 4).tolist())
    assert med[0] >= 0.95 and med[1] >= 0.95
    # numina's own stream: the same simulated histogram, so the same masks
    same = median_minimum(read_images(cfg), gain=cfg.gain, rnoise=cfg.rnoise, bias=cfg.bias,
                          **{**cfg.params, "mm_rng": "numina"})
    for name in theirs:
        np.testing.assert_array_equal(same.masks[name], theirs[name], err_msg=name)
    xc0 = (same.diagram["bins_x"][:-1] + same.diagram["bins_x"][1:]) / 2
    drift = np.max(np.abs(ours.boundary(xc0) - same.boundary(xc0))) / np.max(same.boundary(xc0))
    # the two streams differ as two seeds of one stream do (sampling noise)
    seed8 = median_minimum(read_images(cfg), gain=cfg.gain, rnoise=cfg.rnoise, bias=cfg.bias,
                           **{**cfg.params, "mm_rng": "numina", "mm_seed": 8})
    spread = np.max(np.abs(seed8.boundary(xc0) - same.boundary(xc0))) / np.max(
        same.boundary(xc0))
    print(f"boundary, blocks vs numina stream: max difference {drift:.3f} of its maximum; "
          f"numina stream, seed 7 vs 8: {spread:.3f}")
    assert drift < 2 * spread + 0.02
    ours = same
    # numina's own fit on crdask's simulated histogram: the same curve
    dg = ours.diagram
    st = ours.stats
    hist = np.rint(dg["hist"] * 10).astype(int)     # back to the accumulated counts
    import logging
    _, res = display_hist2d(
        _logger=logging.getLogger("t"), rlabel_mmcosmic="mm", mm_hist2d_min_neighbors=0,
        hist2d_accummulated=hist, mm_nsimulations=10, mm_synthetic="median",
        mm_photon_distribution="poisson", mm_nbinom_shape=1000, bins_xdiag=dg["bins_x"],
        bins_ydiag=dg["bins_y"], xplot=st["min2d"].ravel(),
        yplot=(st["median2d"] - st["min2d"]).ravel(), xdiag_min=dg["bins_x"][0],
        xdiag_max=dg["bins_x"][-1], max2d=st["max2d"], bool_to_be_cleaned=np.ones(
            st["min2d"].shape, bool), rnoise=np.full(st["min2d"].shape, s["rnoise"]),
        mm_threshold=0.0, mm_boundary_fit="spline", mm_knots_splfit=4,
        mm_minimum_max2d_rnoise=5.0, mm_dilation=0, mm_niter_boundary_extension=3,
        mm_weight_boundary_extension=10.0, mm_fixed_points_in_boundary=None,
        x_mm_fixed_points_in_boundary=None, y_mm_fixed_points_in_boundary=None,
        w_mm_fixed_points_in_boundary=None, interactive=False, output_dir=str(tmp_path))
    xc = (dg["bins_x"][:-1] + dg["bins_x"][1:]) / 2
    a, b = ours.boundary(xc), res["boundaryfit"](xc)
    rel = np.max(np.abs(a - b)) / np.max(np.abs(b))
    print(f"boundary curves: max difference {rel:.2e} of the curve's maximum")
    assert rel < 0.02


def test_piecewise_options_identical(tmp_path):
    # regions, pixel lists, two-pass L.A.Cosmic with padding, flux factors,
    # auxiliary median, thresholds and dilations: every mask and product
    s = make_set(3, (160, 160), seed=13, pair=(0, 1), dither=False)
    frames = [f * np.float32(k) for f, k in zip(s["frames"], (1.0, 1.04, 0.97))]
    req = dict(BASE, mm_boundary_fit="piecewise", use_auxmedian=True,
               mm_fixed_points_in_boundary=[[0, 40], [300, 110], [3000, 400], [60000, 3000]],
               flux_factor=[1.0, 1.04, 0.97], la_sigclip=[5.0, 3.0], la_sigfrac=[0.3, 0.2],
               la_padwidth=10, regions_to_be_skipped=[[1, 40, 1, 30]],
               pixels_to_be_flagged_as_cr=[[10, 10]], pixels_to_be_ignored_as_cr=[[80, 80]],
               pixels_to_be_replaced_by_local_median=[[100, 100, 3, 3]], mm_dilation=1,
               dilation=1, mm_threshold_rnoise=2.0, mm_minimum_max2d_rnoise=8.0)
    ours, theirs, _ = both(tmp_path, frames, s["gain"], s["rnoise"], s["bias"], req)
    assert theirs["MEDIANCR"].sum() > 50
    for name in ("MEDIANCR", "MEANCRT", "CRMASK1"):
        np.testing.assert_array_equal(ours.masks[name], theirs[name], err_msg=name)
    # numina tests exposures 2 and 3 without their flux factors (1.04, 0.97)
    # against the flux-scaled min2d; crdask scales them: close, not equal
    for name in ("CRMASK2", "CRMASK3"):
        assert jaccard(ours.masks[name], theirs[name]) > 0.9, name
    from astropy.io import fits
    with fits.open(tmp_path / "numina" / "crmasks.fits") as h:
        np.testing.assert_array_equal(ours.auxclean, h["AUXCLEAN"].data)
        assert [h[0].header[f"FLUXF{i}"] for i in (1, 2, 3)] == [1.0, 1.04, 0.97]
    for comb in ("mean", "median", "min", "mediancr", "meancrt"):
        with fits.open(tmp_path / "numina" / f"combined_{comb}.fits") as h:
            np.testing.assert_array_equal(ours.combination(comb)[0], h[0].data, err_msg=comb)
