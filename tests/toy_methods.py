"""Two toy cosmic-ray methods registered from outside ``crdask/``.

A workflow loads this module with ``plugins: [toy_methods]`` (the tests put
``tests/`` on ``PYTHONPATH``): nothing in ``crdask/`` knows these names.
"""

import numpy as np

from crdask.cosmic.params import Param, ParamSet
from crdask.cosmic.registry import CRResult, Method, register

THRESHOLD = ParamSet("toy_threshold", [
    Param("level", 5000.0, "float", "flag pixels brighter than this", unit="e-", minimum=0),
])


def detect_threshold(data, params, *, bad=None, var=None, readnoise=0.0, num_threads=None):
    crmask = data > params["level"]
    return CRResult(clean=np.where(crmask, np.float32(0), data), crmask=crmask)


register(Method("toy_threshold", "frame", THRESHOLD, detect_threshold))

OTHERS = ParamSet("toy_others", [
    Param("nsigma", 6.0, "float", "flag pixels this far above the others' median",
          unit="sigma", minimum=0, strict=True),
])


def detect_others(data, params, *, bad=None, var=None, readnoise=None, num_threads=None):
    """Each member against the median of the others; replaced by that median."""
    stack = np.stack(data)
    cleaned, masks = [], []
    for i in range(len(data)):
        ref = np.median(np.delete(stack, i, axis=0), axis=0)
        noise = np.sqrt(np.maximum(var[i], 1.0))
        crmask = stack[i] - ref > params["nsigma"] * noise
        masks.append(crmask)
        cleaned.append(np.where(crmask, ref, stack[i]).astype(np.float32))
    return CRResult(clean=cleaned, crmask=masks,
                    products={"median": np.median(stack, axis=0).astype(np.float32)},
                    header={"NCOMBINE": len(data)})


register(Method("toy_others", "group", OTHERS, detect_others, min_members=3))
