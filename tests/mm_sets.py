"""Simulated sets of equivalent exposures for the Median-Minimum tests.

One scene from :func:`crdask.simulate.simulate_frame` (stars on sky, no CRs)
is seen N times with sub-pixel dithers (flux-conserving shifts), fresh
photon and read noise per exposure, each exposure's own CRs (the CR charge
of another seeded ``simulate_frame`` call) and *coincident* CRs: the same
CR charge added to the same pixels of 2 of the N exposures. The truth of
the coincident hits is kept.
"""

from __future__ import annotations

import numpy as np

from crdask.cosmic.mm_boundary import shift_flux
from crdask.simulate import simulate_frame

DITHERS = [(0.0, 0.0), (0.31, -0.22), (-0.27, 0.36), (0.18, 0.41), (-0.39, -0.14)]


def make_set(n=3, shape=(256, 256), seed=0, *, gain=1.0, readnoise=5.0, sky=300.0,
             bias=0.0, dither=True, n_double=60, n_single=None, pair=(0, 1), truth_sigma=5.0):
    """N exposures (ADU, float32, bias included) and the truth.

    Returns dict: ``frames`` (list), ``offsets`` (list of (dx, dy) px),
    ``double`` (bool truth of the coincident-hit pixels: injected charge >
    ``truth_sigma`` times the local noise sigma), ``single`` (list of bool
    truth masks of each exposure's own CRs), ``gain`` (e-/ADU), ``rnoise``
    (ADU), ``bias`` (ADU).
    """
    ny, nx = shape
    pad = 4
    scene = simulate_frame((ny + 2 * pad, nx + 2 * pad), seed, sky=sky, gain=gain,
                           readnoise=0.0, n_cosmics=0, n_saturated=0)
    model_e = scene.clean.astype(np.float64) * gain           # e-, a smooth scene
    rng = np.random.default_rng(seed + 12345)
    offsets = [DITHERS[i % len(DITHERS)] if dither else (0.0, 0.0) for i in range(n)]
    shared = simulate_frame(shape, seed + 7000, sky=sky, gain=gain, readnoise=readnoise,
                            n_stars=0, n_saturated=0, n_cosmics=n_double)
    frames, single = [], []
    lam0 = None
    for i in range(n):
        lam = shift_flux(model_e, *offsets[i])[pad:pad + ny, pad:pad + nx]
        if lam0 is None:
            lam0 = lam
        own = simulate_frame(shape, seed + 100 + i, sky=sky, gain=gain, readnoise=readnoise,
                             n_stars=0, n_saturated=0, n_cosmics=n_single)
        e = rng.poisson(np.maximum(lam, 0)).astype(np.float64) + rng.normal(0, readnoise, shape)
        e += own.crcharge
        if i in pair:
            e += shared.crcharge
        frames.append((e / gain + bias).astype(np.float32))
        single.append(own.crmask)
    sigma = np.sqrt(lam0 + readnoise ** 2)
    double = shared.crcharge > truth_sigma * sigma
    return {"frames": frames, "offsets": [list(o) for o in offsets], "double": double,
            "single": single, "gain": gain, "rnoise": readnoise / gain, "bias": bias}
