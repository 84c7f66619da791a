"""Clean a pair of FITS exposures (or one, with a median companion) with
:func:`crdask.cosmic.cr2images.cr2images` (layer 4).

Decisions:

* Output names as :func:`crdask.pipeline.clean_files.output_name`:
  ``<input stem><suffix>.fits`` in ``out_dir``. Two inputs give two
  outputs, unless ``single_mode`` (then only the first exposure is
  cleaned and written); one input gives one output.
* Output content: primary HDU = cleaned image (float32, physical units of
  the input) under the input header minus its integer-scaling cards;
  HISTORY: crdask version, the parameters (``PARAMS.history``), both input
  files; ``CRNFIX`` = CR pixels replaced in this exposure; extension
  ``MASK`` (uint8, 1 = replaced CR pixel). Outputs are written atomically
  and carry no timestamp, so reruns give identical bytes.
* Pixels of ``mask_hdu`` (non-zero) and non-finite pixels are bad: never
  flagged, returned unchanged.
* A file problem raises :class:`~crdask.io.fits.FitsInputError`
  (``FILE[HDU]: problem``); different shapes raise ``ValueError`` naming
  both files; existing outputs without ``overwrite`` raise
  :class:`~crdask.io.atomic.OutputExistsError` before anything is written.

Example
-------
>>> from crdask.pipeline.pairs import clean_pair          # doctest: +SKIP
>>> clean_pair("a.fits", "b.fits", "clean/", {"tsigma_peak": 8})  # doctest: +SKIP
[{'input': 'a.fits', 'output': 'clean/a_crclean.fits', 'ncr': 412}, ...]
"""

import os

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..cosmic.cr2images import PARAMS, cr2images_arrays, validate
from ..io.atomic import OutputExistsError
from ..io.fits import output_header, read_image, write_fits_atomic
from .clean_files import output_name

__all__ = ["validate_pair_params", "clean_pair"]


def validate_pair_params(params, *, single):
    """Complete ``cr2images`` parameters (``single``: one input file);
    raises :class:`~crdask.cosmic.params.ParamError` naming the parameter."""
    return validate(params or {}, single=single)


def clean_pair(path1, path2, out_dir, params=None, *, hdu=None, mask_hdu=None,
               suffix="_crclean", overwrite=False):
    """Clean ``path1`` and ``path2`` (or ``path1`` alone when ``path2`` is
    None) and write the outputs into ``out_dir`` (created if missing).

    Parameters
    ----------
    path1, path2 : str or path-like (``path2`` may be None)
    out_dir : str or path-like
    params : dict
        ``cr2images`` parameters (names as :data:`PARAMS`); defaults fill
        the rest.
    hdu, mask_hdu : HDU specs as :func:`crdask.io.fits.read_image` takes them.
    suffix : str
    overwrite : bool

    Returns
    -------
    list of dict
        One per written file: ``input``, ``output``, ``ncr`` (CR pixels),
        ``shape``.
    """
    p = validate_pair_params(params, single=path2 is None)
    paths = [os.fspath(path1)] + ([] if path2 is None else [os.fspath(path2)])
    outs = [os.path.join(os.fspath(out_dir), output_name(x, suffix)) for x in paths]
    if len(outs) == 2 and outs[0] == outs[1]:
        raise ValueError(f"{paths[0]} and {paths[1]} have the same output name {outs[0]}")
    keys = {os.path.realpath(x) for x in paths}
    # Only the exposures that are cleaned are written (single mode: the first).
    outs = outs[:1] if p["single_mode"] else outs
    for out in outs:
        if os.path.realpath(out) in keys:
            raise ValueError(f"output {out} would overwrite an input (choose another "
                             "out_dir or suffix)")
        if not overwrite and os.path.lexists(out):
            raise OutputExistsError(out)
    images = [read_image(x, hdu=hdu, mask_hdu=mask_hdu) for x in paths]
    if len(images) == 2 and images[0].data.shape != images[1].data.shape:
        a, b = images
        raise ValueError(f"{b.path}[{b.hdu}] has shape {b.data.shape} but {a.path}[{a.hdu}] "
                         f"has shape {a.data.shape}; a pair must have one shape")
    work = [np.where(im.mask, np.float32(np.nan), im.data.astype(np.float32))
            if im.mask is not None else im.data.astype(np.float32) for im in images]
    c1, c2, m1, m2 = cr2images_arrays(work[0], work[1] if len(work) == 2 else None, p)
    results = []
    cleaned = [(c1, m1), (c2, m2)][:len(outs)]
    names = [os.path.basename(im.path) for im in images]
    os.makedirs(out_dir, exist_ok=True)
    for im, out, (clean, mask) in zip(images, outs, cleaned):
        if im.mask is not None:
            clean = np.where(im.mask, im.data.astype(np.float32), clean)
            mask = mask & ~im.mask
        ncr = int(np.count_nonzero(mask))
        header = output_header(im)
        header["CRNFIX"] = (ncr, "cosmic-ray pixels found and cleaned (crdask)")
        header.add_history(f"crdask {__version__} cr2images")
        header.add_history("inputs: " + " ".join(names) if len(names) == 2 else
                           f"input: {names[0]} (companion: its median filter)")
        header.add_history(f"this file: {os.path.basename(im.path)}[{im.hdu}]")
        for line in PARAMS.history(p):
            header.add_history(line)
        header.add_history(f"crdask cr2images: CRNFIX={ncr} cosmic-ray pixels cleaned")
        primary = fits.PrimaryHDU(data=np.asarray(clean, dtype=np.float32), header=header)
        mhdu = fits.ImageHDU(data=mask.astype(np.uint8), name="MASK")
        mhdu.header["COMMENT"] = "1 = cosmic-ray pixel replaced by crdask cr2images"
        write_fits_atomic([primary, mhdu], out, overwrite=overwrite)
        results.append({"input": im.path, "output": out, "ncr": ncr,
                        "shape": tuple(im.data.shape)})
    return results
