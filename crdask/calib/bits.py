"""Bits of the MASK extension of calibrated frames (uint8 in files, DESIGN.md).

A pixel's value is the OR of the reasons it is not to be trusted. The
meaning of each bit is also written into every output header (``MASKBn``
cards), so a file explains itself.
"""

#: Bad pixel from the bad-pixel mask (hot in the dark, dead/low in the flat,
#: bad column), or flagged bad by the input mask.
BAD = 1
#: At or above the saturation level in the raw frame.
SATURATED = 2
#: Cosmic ray (found by a CR method).
COSMIC_RAY = 4
#: Not finite in the input or after calibration (NaN/inf), or a flat <= 0.
NONFINITE = 8
#: Flat-field value unusable (<= 0 or not finite): the pixel is not corrected.
FLAT_INVALID = 16

BITS = {
    "BAD": BAD,
    "SATURATED": SATURATED,
    "COSMIC_RAY": COSMIC_RAY,
    "NONFINITE": NONFINITE,
    "FLAT_INVALID": FLAT_INVALID,
}


def describe_bits(header):
    """Write ``MASKB<value> = NAME`` cards into an astropy ``Header``."""
    for name, value in BITS.items():
        header[f"MASKB{value}"] = (name, "meaning of MASK bit value")
    return header
