"""Helpers shared by the ``bench_*.py`` scripts (machine description, output)."""

import json
import os
import platform
import statistics
import sys


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(mod):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception:  # pragma: no cover - optional packages
        return None


def machine():
    """Description of the machine and the relevant package versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        **{m: _version(m) for m in ("numpy", "numba", "dask", "distributed",
                                    "astroscrappy", "crdask")},
    }


def print_machine(info):
    print("machine: {cpu}, {cores} cores ({cores_usable} usable), {ram_gb} GB RAM; "
          "python {python}, numpy {numpy}, numba {numba}, dask {dask}, "
          "distributed {distributed}, astroscrappy {astroscrappy}, crdask {crdask}"
          .format(**info), flush=True)


def emit_json(payload):
    print("JSON " + json.dumps(payload, default=_json_default), flush=True)


def _json_default(o):
    try:
        return o.item()
    except AttributeError:
        return str(o)


def median(xs):
    return statistics.median(xs)


def jaccard(a, b):
    import numpy as np
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def in_path():
    """Make ``_benchcommon`` importable when run from elsewhere (spawned children)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)


def status_kb(field):
    """A ``/proc/self/status`` field (e.g. VmHWM, VmRSS) in kB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0). True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return status_kb("VmHWM") <= status_kb("VmRSS") + 1024
