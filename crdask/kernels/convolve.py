"""2-D convolution with zero padding (the fine-structure matched filter)."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def convolve(data, kernel):
    """Convolve ``data`` with ``kernel``; pixels outside are zero.

    Parameters
    ----------
    data : float32 (ny, nx)
    kernel : float32 (ky, kx), odd sides.

    Returns
    -------
    float32 (ny, nx): ``out[j, i] = sum_{l,k} kernel[cy - l, cx - k] *
    data[j + l, i + k]`` (a true convolution: the kernel is flipped),
    accumulated in float32, ``l`` outer and ``k`` inner.
    """
    ny, nx = data.shape
    ky, kx = kernel.shape
    cy = (ky - 1) // 2
    cx = (kx - 1) // 2
    out = np.empty((ny, nx), dtype=np.float32)
    for j in range(ny):
        for i in range(nx):
            s = np.float32(0.0)
            for l in range(-cy, cy + 1):
                y = j + l
                if y < 0 or y >= ny:
                    continue
                for k in range(-cx, cx + 1):
                    x = i + k
                    if x < 0 or x >= nx:
                        continue
                    s += kernel[cy - l, cx - k] * data[y, x]
            out[j, i] = s
    return out
