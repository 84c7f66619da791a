"""Per-chunk checksums of Zarr intermediates, and the errors of damaged ones (layer 3).

:class:`crdask.io.intermediates.IntermediateStore` records, for every chunk
of every array it writes, the CRC-32 of the chunk's pixels (little-endian
bytes, computed from the arrays in memory) and the size of the chunk file
(:func:`record_chunks`), in the group's ``complete`` metadata. On reading,
:func:`check_chunk_files` (a ``stat`` per chunk: missing, truncated,
extended) runs before the data are decoded, and :func:`verify_chunks` (the
CRCs) after; both raise :class:`IntermediateDamaged` naming frame, array and
chunk.
"""

import itertools
import os
import zlib

import numpy as np

__all__ = ["IncompleteError", "IntermediateDamaged", "chunk_slices", "crc32_le",
           "chunk_checksums", "chunk_file", "record_chunks", "check_chunk_files",
           "verify_chunks"]


class IncompleteError(KeyError):
    """The frame or master is missing or was not completely written."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IntermediateDamaged(IncompleteError):
    """A complete frame or master whose stored chunks do not match their checksums.

    ``str(err)`` is one line naming the frame, the array and the chunk:
    ``r0042: mask chunk 0.1 missing``. Attributes: ``name``, ``key`` (array),
    ``chunk`` (chunk id ``"i.j"`` or None), ``path`` (the group directory).
    The remedy is always the same: recompute the frame from its raw file.
    """

    def __init__(self, message, *, name=None, key=None, chunk=None, path=None):
        super().__init__(message)
        self.name, self.key, self.chunk, self.path = name, key, chunk, path

    def __reduce__(self):
        return (_damaged, (self.args[0], self.name, self.key, self.chunk, self.path))


def _damaged(message, name, key, chunk, path):
    return IntermediateDamaged(message, name=name, key=key, chunk=chunk, path=path)


def chunk_slices(shape, chunks):
    """``(chunk id "i.j", slices)`` of each chunk of a regular grid, in C order.

    Examples
    --------
    >>> [cid for cid, _ in chunk_slices((5, 4), (2, 4))]
    ['0.0', '1.0', '2.0']
    """
    ranges = [range(-(-s // c)) for s, c in zip(shape, chunks)]
    for idx in itertools.product(*ranges):
        yield (".".join(map(str, idx)),
               tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape)))


def crc32_le(block):
    """CRC-32 (zlib) of an array's bytes, little-endian, C order (0 if empty)."""
    block = np.ascontiguousarray(block)
    if block.dtype.byteorder == ">" or (block.dtype.byteorder == "=" and not _LITTLE):
        block = block.astype(block.dtype.newbyteorder("<"))
    return zlib.crc32(memoryview(block).cast("B")) if block.size else 0


_LITTLE = np.little_endian


def chunk_checksums(array, chunks):
    """CRC-32 of each chunk of ``array`` under the chunk shape ``chunks``.

    Parameters
    ----------
    array : numpy.ndarray
        Any shape; the bytes are taken little-endian, C order, per chunk.
    chunks : tuple of int
        The chunk shape (as given to Zarr).

    Returns
    -------
    dict
        ``{"i.j": crc32}`` (int), one entry per chunk of the grid.

    Examples
    --------
    >>> chunk_checksums(np.zeros((4, 2), "u1"), (2, 2))
    {'0.0': 558161692, '1.0': 558161692}
    """
    a = np.asarray(array)
    return {cid: crc32_le(a[sl]) for cid, sl in chunk_slices(a.shape, chunks)}


def chunk_file(node, key, cid):
    """Path of chunk ``cid`` ("i.j") of array ``key`` in a Zarr v3 group ``node``."""
    return os.path.join(node, key, "c", *cid.split("."))


def record_chunks(node, arrays, chunk_shapes):
    """``{key: {chunk id: [crc32, file size]}}`` for arrays just written to ``node``.

    Parameters
    ----------
    node : str
        The Zarr group directory.
    arrays : dict of numpy.ndarray
        What was written (the checksums describe these pixels).
    chunk_shapes : dict of tuple
        The chunk shape of each array.
    """
    return {k: {cid: [crc, os.path.getsize(chunk_file(node, k, cid))]
                for cid, crc in chunk_checksums(a, chunk_shapes[k]).items()}
            for k, a in arrays.items()}


def check_chunk_files(name, node, keys, sums):
    """Every chunk file of ``keys`` there, with its recorded size (no data read).

    Raises :class:`IntermediateDamaged`: written without checksums, a chunk
    missing, or a chunk file of another size (truncated or extended).
    """
    if not isinstance(sums, dict):
        raise IntermediateDamaged(f"{name}: written without checksums (older crdask); "
                                  "recompute it", name=name, path=node)
    for k in keys:
        if not isinstance(sums.get(k), dict):
            raise IntermediateDamaged(f"{name}: {k} has no checksums", name=name, key=k,
                                      path=node)
        for cid, (_, size) in sums[k].items():
            try:
                got = os.path.getsize(chunk_file(node, k, cid))
            except OSError:
                raise IntermediateDamaged(f"{name}: {k} chunk {cid} missing", name=name,
                                          key=k, chunk=cid, path=node) from None
            if got != size:
                raise IntermediateDamaged(f"{name}: {k} chunk {cid} truncated or "
                                          f"damaged ({got} bytes, {size} written)",
                                          name=name, key=k, chunk=cid, path=node)


def verify_chunks(name, node, arrays, chunk_shapes, sums):
    """The decoded ``arrays`` match the recorded CRC of every chunk.

    Raises :class:`IntermediateDamaged` naming the first chunk that does not
    (a flipped bit, also one inside a compressed chunk).
    """
    for k, a in arrays.items():
        for cid, sl in chunk_slices(a.shape, chunk_shapes[k]):
            if crc32_le(a[sl]) != sums[k][cid][0]:
                raise IntermediateDamaged(f"{name}: {k} chunk {cid} does not match its "
                                          "checksum (damaged)", name=name, key=k, chunk=cid,
                                          path=node)
