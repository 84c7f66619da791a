"""Output names from input names, without collisions (layer 3).

A night's outputs are named after their raw files: ``<stem>_cal.fits``,
``<stem>_crclean.fits``, ledger entry ``<stem>``, intermediate frame
``<stem>``. The stem keeps *every* part of the basename but the FITS suffix
and a compression suffix, so dotted names stay apart::

    m51.0001.fits.gz -> m51.0001        r0042.FITS -> r0042
    bias.fit.fz      -> bias            notes.txt  -> notes.txt

(Cutting at the first dot instead would map ``m51.0001.fits`` ...
``m51.0004.fits`` all to ``m51``: four frames written over one another.)
Two inputs that still map to one stem (``a.fits`` and ``a.fits.gz``, or the
same name in two folders) are refused by :func:`check_stems` before anything
runs.
"""

import os

__all__ = ["FITS_SUFFIXES", "COMPRESSION_SUFFIXES", "StemCollisionError", "output_stem",
           "check_stems"]

#: FITS file suffixes removed from a name (compared case-insensitively).
FITS_SUFFIXES = (".fits", ".fit", ".fts")
#: Compression suffixes removed (before the FITS suffix) from a name.
COMPRESSION_SUFFIXES = (".gz", ".fz", ".bz2")


class StemCollisionError(ValueError):
    """Two inputs would be written to the same output name."""


def _strip(name, suffixes):
    low = name.lower()
    for ext in suffixes:
        # a bare ".fits" keeps its name: there would be no stem left
        if low.endswith(ext) and len(name) > len(ext):
            return name[:-len(ext)], True
    return name, False


def output_stem(path):
    """The stem that names every output of the input ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        An input file (only its basename matters).

    Returns
    -------
    str
        The basename without a compression suffix (``.gz``, ``.fz``,
        ``.bz2``) and then without a FITS suffix (``.fits``, ``.fit``,
        ``.fts``), any case; every other dot is kept.

    Examples
    --------
    >>> output_stem("/night/m51.0001.fits.gz")
    'm51.0001'
    >>> output_stem("R0042.FTS")
    'R0042'
    """
    name = os.path.basename(os.fspath(path).rstrip("/\\"))
    name, _ = _strip(name, COMPRESSION_SUFFIXES)
    name, _ = _strip(name, FITS_SUFFIXES)
    return name


def check_stems(paths):
    """``{stem: path}`` for ``paths``; refuses two inputs with one stem.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        The input files of one output folder.

    Returns
    -------
    dict
        Output stem -> input path (as given), in input order.

    Raises
    ------
    StemCollisionError
        One line naming both inputs and the stem they share, e.g.
        ``inputs raw/a.fits and raw/a.fits.gz would both be written as 'a'
        (rename one)``. The same file given twice is not a collision.

    Examples
    --------
    >>> check_stems(["n/m51.0001.fits", "n/m51.0002.fits"])
    {'m51.0001': 'n/m51.0001.fits', 'm51.0002': 'n/m51.0002.fits'}
    """
    seen = {}
    real = {}
    for p in paths:
        p = os.fspath(p)
        stem = output_stem(p)
        if stem in seen:
            if real[stem] == os.path.realpath(p):
                continue
            raise StemCollisionError(
                f"inputs {seen[stem]} and {p} would both be written as {stem!r} "
                "(rename one)")
        seen[stem] = p
        real[stem] = os.path.realpath(p)
    return seen
