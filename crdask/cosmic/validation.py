"""Parameter and array checks shared by the CR-detection functions.

Every check raises ``ValueError``/``TypeError`` with one line naming the
parameter, the value received and what is allowed, before any heavy work.
"""

import numbers
import sys

import dask.array as da
import numpy as np


def is_ccddata(obj):
    """True if ``obj`` is an ``astropy.nddata.CCDData``, without importing
    ``astropy.nddata`` (0.2-0.3 s, paid inside the first L.A.Cosmic call of
    every process, with the other threads of a parallel run waiting on the
    import lock): if the module was never imported, no CCDData exists."""
    cls = getattr(sys.modules.get("astropy.nddata"), "CCDData", None)
    return cls is not None and isinstance(obj, cls)   # (None while mid-import)


def check_choice(name, value, allowed):
    """``value`` must be one of ``allowed`` (strings)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; "
                         f"got {value!r}")
    return value


def check_number(name, value, minimum=None, strict=False, integer=False,
                 allow_inf=False):
    """A real number (an integer if ``integer``), finite unless ``allow_inf``,
    ``>= minimum`` (``> minimum`` if ``strict``). Returns it as float/int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = float(value)
    if np.isnan(v) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None:
        if strict and not v > minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value!r}")
        if not strict and not v >= minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value) if integer else v


def as_image(name, arr):
    """Check a 2-D, non-empty, real-valued array (numpy or Dask).

    Big-endian numpy data (as read from FITS) is converted to native byte
    order; the caller's array is never modified. For ``kind='mask'`` any
    non-zero value means masked.
    """
    if not isinstance(arr, da.Array):
        arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (y, x), got {arr.ndim}-D "
                         f"with shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    dt = arr.dtype
    if dt.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {dt}")
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
    return arr


def check_same_shape(name, arr, data):
    """``arr`` must have ``data``'s shape."""
    if tuple(arr.shape) != tuple(data.shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)} but data has shape "
                         f"{tuple(data.shape)}")
