"""Where the real FITS frames of ../shared/data are, and how tests read them."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

#: The real frames: ``$CRDASK_SHARED_DATA`` if set, else ``shared/data`` beside
#: the repository (a checkout sits next to ``shared/``); no other place.
SHARED = Path(os.environ.get("CRDASK_SHARED_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")

REAL_FRAMES = {
    "m51": "kpno-m51/dev_pix_m51_B_600s.fits",
    "wht": "wht-isis-dark/wht070.fits",
    "sprat": "sprat-lhs6328/v_e_20180810_12_1_0_0.fits.gz",
}


def read_real(name):
    """Primary-HDU data of a real frame as native float32 (ADU)."""
    from astropy.io import fits
    path = SHARED / REAL_FRAMES[name]
    if not path.exists():
        pytest.fail(f"real test data missing: {path} (see shared/data/README.md)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wht070.fits has one trailing byte
        with fits.open(path) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)
