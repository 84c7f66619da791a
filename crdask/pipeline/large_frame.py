"""Cosmic-ray cleaning of frames larger than memory: blocks in, blocks out.

:func:`crdask.pipeline.clean_files.clean_one` reads a frame whole and writes
it whole, which at 20,000 x 20,000 float32 pixels (1.6 GB) means ~19 GB of
working memory for astroscrappy and several GB for the in-memory path. For a
frame of more than :data:`LARGE_FRAME_PIXELS` pixels it hands the file to
:func:`clean_large` instead, which

* reads the image lazily as a Dask array: each block is read from the data
  section of the file with positioned reads when a task needs it (no
  whole-file memory map, so the process holds only the blocks in flight) and
  scaled to physical values exactly as astropy scales them;
* computes the frame-wide values first (the exact background medians of two
  histogram passes and, for ``cleantype='median'``, the frame's stopping
  iteration: :func:`crdask.cosmic.lacosmic_graph.frame_values`), one
  streaming pass each, so every block gets the values the whole frame
  would give;
* runs the L.A.Cosmic blocks one band of block rows at a time and writes
  each band straight into a pre-sized output FITS file -- a temporary name
  in the output folder, renamed when complete (``crdask.io.atomic``) -- with
  the same content as ``clean_one`` writes: cleaned float32 primary with the
  input header, HISTORY, ``CRNFIX``, and the uint8 ``MASK`` extension. The
  two paths give byte-identical files.

Only plain (uncompressed) files whose image needs no ``BLANK`` handling take
this path; anything else falls back to the in-memory path, which reports
problems with the file as usual.
"""

import hashlib
import io
import os
import time
import warnings

import dask
import dask.array as da
import numpy as np
from astropy.io import fits

from ..cosmic.lacosmic import make_params
from ..cosmic.lacosmic_graph import frame_values, lacosmic_graph
from ..io.atomic import OutputExistsError, atomic_open
from ..io.fits import FitsInputError, ImageInput, output_header, parse_hdu
from .clean_files import add_history, failure_line, header_params, job_summary

__all__ = ["LARGE_FRAME_PIXELS", "BLOCK_SHAPE", "large_frame_pixels", "FitsBlockReader",
           "is_large", "clean_large"]

#: Frames with more pixels than this (about 6300 x 6300) are cleaned block by
#: block. The in-memory path needs about 25 bytes per pixel at its peak
#: (~1 GB at 4096 x 4096); above this size that would pass 1 GB per worker.
#: The environment variable ``CRDASK_LARGE_FRAME_PIXELS`` overrides it.
LARGE_FRAME_PIXELS = 40_000_000

#: Block shape (rows, columns) for large frames: 16 MiB of float32 per block
#: and rows of blocks about 1024 rows high, so a band in flight stays small.
BLOCK_SHAPE = (1024, 4096)

_COMPRESSED = (".gz", ".fz", ".bz2", ".zip", ".z")
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def large_frame_pixels():
    """The threshold in pixels: ``$CRDASK_LARGE_FRAME_PIXELS`` or the default.

    Example
    -------
    >>> large_frame_pixels() > 0
    True
    """
    value = os.environ.get("CRDASK_LARGE_FRAME_PIXELS")
    if value is None or not value.strip():
        return LARGE_FRAME_PIXELS
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"CRDASK_LARGE_FRAME_PIXELS must be an integer number of "
                         f"pixels, got {value!r}") from None
    if n < 1:
        raise ValueError(f"CRDASK_LARGE_FRAME_PIXELS must be >= 1, got {value!r}")
    return n


def _pick_hdu(hdul, spec):
    """(index, label, hdu) of a 2-D image HDU, or None when not found/usable
    (the in-memory path then reports the problem)."""
    if spec is None:
        for i, h in enumerate(hdul):
            if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU)) and h.header.get("NAXIS") == 2:
                return i, i, h
        return None
    try:
        h = hdul[spec]
    except (KeyError, IndexError):
        return None
    if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU)) or h.header.get("NAXIS") != 2:
        return None
    label = ",".join(map(str, spec)) if isinstance(spec, tuple) else spec
    return hdul.index(h), label, h


class FitsBlockReader:
    """An image HDU of an uncompressed FITS file as a lazily read 2-D array.

    ``reader[ys, xs]`` (two slices) reads just those pixels (one positioned
    read per row) and returns them in physical units, native byte order,
    with the dtype astropy would give (e.g. ``uint16`` for ``BZERO=32768``,
    float32 for scaled 16-bit data). ``da.from_array(reader, chunks)`` makes
    it a Dask array.

    Parameters
    ----------
    path : str, the file.  offset : int, byte offset of the data section.
    header : the HDU's ``fits.Header`` (BITPIX, NAXISn, BZERO, BSCALE).
    hdu : the HDU's label, for error messages.

    Example
    -------
    >>> r = FitsBlockReader("frame.fits", 2880, header)  # doctest: +SKIP
    >>> block = r[0:100, 0:200]  # (100, 200) array
    """

    def __init__(self, path, offset, header, hdu=None):
        self.path = os.fspath(path)
        self.hdu = hdu
        self.offset = int(offset)
        self.bitpix = int(header["BITPIX"])
        self.raw_dtype = np.dtype(_DTYPES[self.bitpix])
        self.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        self.ndim = 2
        self.bscale = header.get("BSCALE", 1)
        self.bzero = header.get("BZERO", 0)
        self.unsigned = (self.bitpix in (16, 32, 64) and self.bscale == 1
                         and self.bzero == 2 ** (self.bitpix - 1))
        if self.bscale == 1 and self.bzero == 0:
            self.dtype = self.raw_dtype.newbyteorder("=")
        elif self.unsigned:
            self.dtype = np.dtype(f"u{self.raw_dtype.itemsize}")
        else:  # astropy: float32 for 8/16-bit and float32 data, else float64
            self.dtype = np.dtype(np.float32 if self.bitpix in (8, 16, -32) else np.float64)

    def __getitem__(self, key):
        ys, xs = (k if isinstance(k, slice) else slice(k, k + 1) for k in key)
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        raw = np.empty((max(y1 - y0, 0), max(x1 - x0, 0)), self.raw_dtype)
        size = self.raw_dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            for j in range(raw.shape[0]):
                f.seek(self.offset + ((y0 + j) * self.shape[1] + x0) * size)
                view = memoryview(raw[j]).cast("B")
                if f.readinto(view) != view.nbytes:
                    raise FitsInputError(self.path, self.hdu, "truncated file: image data "
                                         f"ends before row {y0 + j + 1}")
        return self._physical(raw)

    def _physical(self, raw):
        if self.bscale == 1 and self.bzero == 0:
            return raw.astype(self.dtype)
        if self.unsigned:
            signed = raw.astype(raw.dtype.newbyteorder("="))
            return (signed.view(self.dtype) ^ self.dtype.type(2 ** (self.bitpix - 1)))
        out = raw.astype(self.dtype)
        if self.bscale != 1:
            out *= self.bscale
        if self.bzero != 0:
            out += self.bzero
        return out


def _open(job):
    """(ImageInput with lazy ``data``, lazy mask or None), or None if the file
    cannot take the block path."""
    path = os.fspath(job["input"])
    if path.lower().endswith(_COMPRESSED) or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the in-memory path reports them
            hdul = fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True,
                             do_not_scale_image_data=True)
        with hdul:
            found = _pick_hdu(hdul, parse_hdu(job.get("hdu")))
            mask_spec = parse_hdu(job.get("mask_hdu"))
            mfound = None if mask_spec is None else _pick_hdu(hdul, mask_spec)
            if found is None or (mask_spec is not None and mfound is None):
                return None
            index, label, h = found
            readers = []
            for i, hh in ((index, h),) + (() if mfound is None else ((mfound[0], mfound[2]),)):
                hdr = hh.header
                if (hdr.get("BITPIX") not in _DTYPES or "BLANK" in hdr
                        or isinstance(hh, fits.CompImageHDU)):
                    return None
                r = FitsBlockReader(path, hdul.fileinfo(i)["datLoc"], hdr, hdu=i)
                if r.offset + r.raw_dtype.itemsize * r.shape[0] * r.shape[1] > size:
                    return None  # truncated: the in-memory path says so
                readers.append(r)
            header = h.header.copy()
            primary = header if index == 0 else hdul[0].header.copy()
    except Exception:  # anything odd: the in-memory path reports it properly
        return None
    if len(readers) == 2 and readers[1].shape != readers[0].shape:
        return None
    st = os.stat(path)
    token = hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}:{index}".encode()).hexdigest()
    arrays = [da.from_array(r, chunks=BLOCK_SHAPE, name=f"fits-{k}-{token}", asarray=True,
                            fancy=False, meta=np.empty((0, 0), r.dtype))
              for k, r in enumerate(readers)]
    mask = None if len(arrays) == 1 else arrays[1] != 0  # NaN != 0: bad too
    image = ImageInput(path=path, hdu=label, index=index, data=arrays[0], header=header,
                       primary_header=primary, mask=mask, warnings=[])
    return image


def is_large(job):
    """True when ``job``'s image has more than :func:`large_frame_pixels`
    pixels and can be read block by block (see the module notes).

    Reads the headers only. ``job`` is a :func:`~crdask.pipeline.clean_files.clean_one` job.

    Example
    -------
    >>> is_large({"input": "big.fits", "hdu": None})  # doctest: +SKIP
    True
    """
    opened = _open(job)
    return opened is not None and int(np.prod(opened.data.shape)) > large_frame_pixels()


def _headers(header, ny, nx):
    """(primary header bytes, MASK header bytes) exactly as astropy writes
    them for a (ny, nx) float32 primary and uint8 ``MASK`` extension."""
    primary = fits.PrimaryHDU(data=np.zeros((1, 1), np.float32), header=header)
    mask = fits.ImageHDU(data=np.zeros((1, 1), np.uint8), name="MASK")
    mask.header["COMMENT"] = "1 = cosmic-ray pixel found by crdask lacosmic"
    buf = io.BytesIO()
    fits.HDUList([primary, mask]).writeto(buf, output_verify="fix+warn")
    buf.seek(0)
    out = []
    with fits.open(buf) as hdul:
        for h in hdul:
            hdr = h.header.copy()
            hdr["NAXIS1"] = nx
            hdr["NAXIS2"] = ny
            out.append(hdr.tostring().encode("ascii"))
    return out


def _padded(n):
    return -(-n // 2880) * 2880


def clean_large(job):
    """Clean one large FITS frame block by block (the ``clean_one`` task for
    frames above the threshold); same ``job`` dict and summary as
    :func:`~crdask.pipeline.clean_files.clean_one`, same output file.

    Memory: about ``num_threads`` blocks in flight plus three bands of block
    rows (input, neighbours for the halo, output), independent of the frame
    size. Problems with the file are reported in the summary, never raised.

    Example
    -------
    >>> clean_large({"input": "big.fits", "output": "out/big_crclean.fits",
    ...              "params": validate_params({}), "hdu": None})  # doctest: +SKIP
    {'ok': True, 'ncr': 123456, ...}
    """
    t0 = time.perf_counter()
    label = job.get("hdu")
    where = job["input"] if label is None else f"{job['input']}[{label}]"
    try:
        if not job.get("overwrite") and os.path.lexists(job["output"]):
            raise OutputExistsError(job["output"])
        image = _open(job)
        if image is None:
            raise FitsInputError(job["input"], label, "cannot be read block by block")
        label = image.hdu
        where = f"{image.path}[{image.hdu}]"
        params, sources = header_params(image, job)
        ncr, msgs = _clean_to_file(image, params, sources, job)
        return job_summary(job, hdu=image.hdu, ok=True, ncr=ncr, shape=image.data.shape,
                        gain=params["gain"], readnoise=params["readnoise"],
                        seconds=time.perf_counter() - t0, warnings=msgs)
    except Exception as e:  # anything only sets this frame aside
        err = failure_line(e, where)
    return job_summary(job, hdu=label, error=err, seconds=time.perf_counter() - t0)


def _clean_to_file(image, params, sources, job):
    padwidth = int(params.get("padwidth", 0))
    p = make_params(psfk=None, **{k: v for k, v in params.items() if k != "padwidth"})
    threads = job.get("num_threads") or os.cpu_count() or 1
    sched = dict(scheduler="threads", num_workers=threads) if threads > 1 else \
        dict(scheduler="sync")
    data, mask = image.data, image.mask
    if padwidth:
        data, mask = (None if a is None else da.pad(a, padwidth, mode="symmetric")
                      for a in (data, mask))
    with dask.config.set(**sched):
        levels, n_iter = frame_values(data, mask, None, None, p)
        crmask, clean = lacosmic_graph(data, mask, None, None, p, levels=levels,
                                       n_iter=n_iter)
    if padwidth:
        crop = (slice(padwidth, -padwidth), slice(padwidth, -padwidth))
        crmask, clean = crmask[crop], clean[crop]
    ny, nx = image.data.shape

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = output_header(image)
        h0, h1 = _headers(add_history(base.copy(), image, params, sources,
                                      job.get("mask_hdu"), 0), ny, nx)
        off_mhdr = len(h0) + _padded(ny * nx * 4)
        off_mask = off_mhdr + len(h1)
        total = off_mask + _padded(ny * nx)
        ncr = 0
        with atomic_open(job["output"], overwrite=bool(job.get("overwrite"))) as f:
            f.truncate(total)  # zeros: the FITS padding of both data sections
            f.seek(off_mhdr)
            f.write(h1)
            # One band of block rows at a time; the edges of the output's chunks.
            edges = np.cumsum((0,) + clean.chunks[0])
            for r0, r1 in zip(edges[:-1], edges[1:]):
                with dask.config.set(**sched):
                    m, c = dask.compute(crmask[r0:r1], clean[r0:r1])
                ncr += int(np.count_nonzero(m))
                f.seek(len(h0) + int(r0) * nx * 4)
                f.write(np.ascontiguousarray(c, dtype=">f4").data)
                f.seek(off_mask + int(r0) * nx)
                f.write(np.ascontiguousarray(m, dtype=np.uint8).data)
                del m, c
            final, _ = _headers(add_history(base.copy(), image, params, sources,
                                            job.get("mask_hdu"), ncr), ny, nx)
            if len(final) != len(h0):  # cannot happen: same cards, one value changed
                raise RuntimeError("primary header changed size with CRNFIX")
            f.seek(0)
            f.write(final)
    msgs = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in msgs:
            msgs.append(text)
    return ncr, msgs
