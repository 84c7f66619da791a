"""Clean cosmic rays from many FITS files, in-process or on a Dask cluster.

One input file is one task: the task reads its file, runs
:func:`crdask.lacosmic` (which itself uses ``num_threads`` threads), writes
its output atomically and returns a small summary dict. Pixels never travel
through the scheduler, so the same code runs on a laptop's ``LocalCluster``
or on a cluster whose workers share a filesystem with the inputs.

Decisions (an astronomer's expectations, written down):

* Output name: ``<input stem><suffix>.fits`` in ``out_dir`` (``.fits``,
  ``.fit``, ``.fts`` and a ``.gz``/``.fz``/``.bz2`` compression suffix are
  stripped from the stem); outputs are written uncompressed.
* Output content: primary HDU = cleaned data (float32, physical units of the
  input) with the input header minus the integer-scaling cards; HISTORY
  lines with the crdask version, every parameter and the input file; keyword
  ``CRNFIX`` = number of CR pixels; extension ``MASK`` (uint8, 1 = CR).
  Outputs carry no timestamp, so the same inputs and parameters give
  byte-identical files whatever the number of workers or threads.
* A frame whose input cannot be used (missing, truncated, no 2-D data, bad
  keyword), whose output exists (without ``overwrite``) or whose output name
  collides with another input's is set aside: its summary has ``ok=False``
  and a one-line ``error`` ``"FILE[HDU]: problem"``; the others still run.
* Default local cluster: ``min(files, cores, memory / 2 GiB)`` worker
  processes, sharing the cores as threads; each worker cleans one file at a
  time (a Dask resource) with all its threads, so cores are never
  oversubscribed. With an external scheduler (``scheduler=``), each task
  uses ``threads_per_worker`` threads (default 1), since a worker runs as many
  tasks at once as it has threads.
"""

import os
import time
import warnings

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..cosmic.lacosmic import PARAMS, lacosmic
from ..io.atomic import OutputExistsError
from ..io.naming import output_stem
from ..io.fits import (
    FitsInputError,
    header_number,
    history_lines,
    output_header,
    parse_hdu,
    read_image,
    write_fits_atomic,
)
from .cluster import connect

__all__ = [
    "validate_params",
    "output_name",
    "plan_outputs",
    "clean_one",
    "clean_files",
    "header_params",
    "job_summary",
    "failure_line",
    "add_history",
]


def validate_params(params):
    """Check ``lacosmic`` parameters before any file is touched.

    Returns the complete parameter dict of the CLI parameters (defaults
    filled in); raises :class:`~crdask.cosmic.params.ParamError` naming the
    parameter.
    """
    full = PARAMS.validate(params)
    return {p.name: full[p.name] for p in PARAMS if p.cli}


def output_name(path, suffix="_crclean"):
    """``dir/frame.0001.fits.gz`` -> ``frame.0001<suffix>.fits`` (stem: :func:`crdask.io.naming.output_stem`)."""
    return f"{output_stem(path)}{suffix}.fits"


def _key(path):
    return os.path.normcase(os.path.realpath(path))


def plan_outputs(inputs, out_dir, suffix="_crclean"):
    """``[(input, output, error)]``: the output path of each input, or an error
    line if it would collide with another input's output or be an input."""
    inputs = [os.fspath(p) for p in inputs]
    input_keys = {_key(p) for p in inputs}
    taken = {}
    plan = []
    for p in inputs:
        out = os.path.join(os.fspath(out_dir), output_name(p, suffix))
        k = _key(out)
        if k in input_keys:
            plan.append((p, None, f"{p}: output {out} would overwrite an input "
                         "(choose another --out-dir or --suffix)"))
        elif k in taken:
            plan.append((p, None, f"{p}: output {out} is also the output of "
                         f"{taken[k]} (listed twice, or same name in two folders?)"))
        else:
            taken[k] = p
            plan.append((p, out, None))
    return plan


def job_summary(job, **kw):
    """The summary dict of one cleaning job (``clean_one``, ``clean_large``):
    input, output, hdu, ok, ncr, seconds, shape, error, warnings, with
    ``kw`` over the defaults (not done, nothing found yet)."""
    s = {"input": job["input"], "output": job["output"], "hdu": job.get("hdu"),
         "ok": False, "ncr": None, "seconds": None, "shape": None, "error": None,
         "warnings": []}
    s.update(kw)
    return s


def failure_line(e, where):
    """The one line that sets a cleaning job's frame aside for exception
    ``e``; ``where`` names the file (and HDU). Input errors already name
    them; anything else gets its type."""
    if isinstance(e, FitsInputError):
        return str(e)
    if isinstance(e, OutputExistsError):
        return f"{where}: {e}"
    return f"{where}: {type(e).__name__}: {e}"


def _where(job, hdu):
    return job["input"] if hdu is None else f"{job['input']}[{hdu}]"


def header_params(image, job):
    """``(params, sources)``: the job's ``lacosmic`` parameters with ``gain``
    and ``readnoise`` read from the header keywords the job names
    (``gain_key``, ``readnoise_key``), and which keyword gave each.

    Raises :class:`~crdask.io.fits.FitsInputError` naming the file, HDU and
    keyword for a value that is not a valid gain (> 0) or read noise (>= 0).
    """
    params = dict(job["params"])
    sources = {}
    for name, key, minimum in (("gain", job.get("gain_key"), None),
                               ("readnoise", job.get("readnoise_key"), 0.0)):
        if not key:
            continue
        value = header_number(image, key)
        if (minimum is None and not value > 0) or (minimum is not None and value < minimum):
            need = "> 0" if minimum is None else ">= 0"
            raise FitsInputError(image.path, image.hdu, f"keyword {key} = {value!r} "
                                 f"is not a valid {name} (must be {need})", keyword=key)
        params[name] = value
        sources[name] = key
    return params, sources


def add_history(header, image, params, sources, mask_hdu, ncr):
    """Provenance of a cleaned file: ``CRNFIX``, the crdask version, the
    input, every parameter (with the keyword a header value came from) and
    the count, as HISTORY; returns ``header``."""
    header["CRNFIX"] = (ncr, "cosmic-ray pixels found and cleaned (crdask)")
    header.add_history(f"crdask {__version__} lacosmic")
    header.add_history(f"input: {os.path.basename(image.path)}[{image.hdu}]")
    words = []
    for k, v in params.items():
        words.append(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}")
        if k in sources:
            words[-1] += f"({sources[k]})"
    if image.mask is not None:
        words.append(f"inmask=[{mask_hdu}]")
    for line in history_lines(words):
        header.add_history(line)
    header.add_history(f"crdask lacosmic: CRNFIX={ncr} cosmic-ray pixels cleaned")
    return header


def clean_one(job):
    """Clean one file; the task run on a worker (or in-process).

    ``job`` is a dict with keys ``input``, ``output``, ``params`` (complete
    ``lacosmic`` parameters), ``hdu``, ``mask_hdu``, ``gain_key``,
    ``readnoise_key``, ``overwrite``, ``num_threads``. Returns a summary dict
    (``ok``, ``ncr``, ``seconds``, ``shape``, ``error``, ``warnings``, ...);
    problems with the file are reported in it, never raised.
    """
    from .large_frame import clean_large, is_large  # frames too big for memory:
    if is_large(job):                                # streamed block by block
        return clean_large(job)
    t0 = time.perf_counter()
    hdu = parse_hdu(job.get("hdu"))
    label = hdu if not isinstance(hdu, tuple) else ",".join(map(str, hdu))
    try:
        if not job.get("overwrite") and os.path.lexists(job["output"]):
            raise OutputExistsError(job["output"])
        image = read_image(job["input"], hdu=hdu, mask_hdu=job.get("mask_hdu"))
        label = image.hdu
        params, sources = header_params(image, job)
        crmask, clean = lacosmic(image.data, inmask=image.mask,
                                 num_threads=job.get("num_threads"), **params)
        ncr = int(np.count_nonzero(crmask))

        header = add_history(output_header(image), image, params, sources,
                             job.get("mask_hdu"), ncr)
        primary = fits.PrimaryHDU(data=np.asarray(clean, dtype=np.float32), header=header)
        mask_hdu = fits.ImageHDU(data=crmask.astype(np.uint8), name="MASK")
        mask_hdu.header["COMMENT"] = "1 = cosmic-ray pixel found by crdask lacosmic"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            write_fits_atomic([primary, mask_hdu], job["output"],
                              overwrite=bool(job.get("overwrite")))
        msgs = list(image.warnings)
        for w in caught:
            text = " ".join(str(w.message).split())
            if text not in msgs:
                msgs.append(text)
        return job_summary(job, hdu=image.hdu, ok=True, ncr=ncr, shape=image.data.shape,
                        gain=params["gain"], readnoise=params["readnoise"],
                        seconds=time.perf_counter() - t0, warnings=msgs)
    except Exception as e:  # anything only sets this frame aside
        err = failure_line(e, _where(job, label))
    return job_summary(job, hdu=label, error=err, seconds=time.perf_counter() - t0)


def clean_files(inputs, out_dir, params=None, *, hdu=None, mask_hdu=None, gain_key=None,
                readnoise_key=None, suffix="_crclean", overwrite=False, scheduler=None,
                workers=None, threads_per_worker=None, on_result=None, log=None):
    """Clean cosmic rays from ``inputs`` (FITS paths), writing into ``out_dir``.

    A single input (or a single one left after set-asides) without
    ``scheduler`` runs in this process (``lacosmic``
    uses ``threads_per_worker`` threads, default all cores). Several inputs
    run one task per file on the Dask scheduler at ``scheduler``, or on a
    ``LocalCluster`` of ``workers`` processes x ``threads_per_worker`` threads
    (default: sized to the machine, see :func:`local_cluster_size`).

    ``on_result(summary)`` is called as each file finishes; ``log(text)`` with
    a line describing the cluster. Returns the summaries in input order.
    Raises ``ValueError`` for bad parameters and
    :class:`~crdask.pipeline.cluster.ClusterError` if the cluster cannot be
    started or reached.
    """
    params = validate_params(params or {})
    for name, v in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    on_result = on_result or (lambda s: None)
    log = log or (lambda s: None)
    os.makedirs(out_dir, exist_ok=True)

    results = [None] * len(inputs)
    jobs = []
    for i, (path, out, err) in enumerate(plan_outputs(inputs, out_dir, suffix)):
        job = {"input": path, "output": out, "params": params, "hdu": hdu,
               "mask_hdu": mask_hdu, "gain_key": gain_key, "readnoise_key": readnoise_key,
               "overwrite": bool(overwrite), "num_threads": threads_per_worker}
        if err is not None:
            results[i] = job_summary(job, error=err)
            on_result(results[i])
        else:
            jobs.append((i, job))
    if not jobs:
        return results

    if scheduler is None and len(jobs) == 1:  # one file: no cluster needed
        for i, job in jobs:
            results[i] = clean_one(job)
            on_result(results[i])
        return results

    from distributed import as_completed

    handle = connect(scheduler=scheduler, workers=workers,
                     threads_per_worker=threads_per_worker, ntasks=len(jobs), log=log)
    log(handle.description)
    client, threads, resources = handle.client, handle.threads, handle.resources
    try:
        futures = {}
        for i, job in jobs:
            job = dict(job, num_threads=threads)
            fut = client.submit(clean_one, job, pure=False, resources=resources,
                                key=f"crdask-lacosmic-{i}-{os.urandom(4).hex()}")
            futures[fut] = (i, job)
        for fut in as_completed(list(futures)):
            i, job = futures[fut]
            try:
                summary = fut.result()
            except Exception as e:  # e.g. KilledWorker: the worker died
                summary = job_summary(job, error=f"{_where(job, job.get('hdu'))}: task failed: "
                                   f"{type(e).__name__}: {e}")
            fut.release()
            results[i] = summary
            on_result(summary)
    finally:
        handle.close()
    return results

