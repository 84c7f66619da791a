"""Duplicate raw files: the same bytes under two names (layer 3).

An observer who copies a night twice, or a transfer script that renames,
leaves identical frames that a reduction would count twice (a master flat
weighted wrongly, a "group" of one exposure and its copy). The catalogue
reports them as a warning naming both files; it does not drop either.

Example
-------
>>> from crdask.io.catalog import build_catalog
>>> build_catalog("raw/").duplicates     # doctest: +SKIP
[('raw/a.fits', 'raw/copy_of_a.fits')]
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["mark_duplicates", "sha256_file"]


def mark_duplicates(frames):
    """Find raw files with the same bytes under different names; add a
    warning naming the other file(s) to each FrameInfo (in place) and return
    the sorted tuples of paths that are identical. Only files that agree on size
    and on every catalogued header value are hashed, so a normal night
    (all DATE-OBS different) reads no data."""
    buckets = {}
    for i, f in enumerate(frames):
        if not f.ok:
            continue
        try:
            size = os.path.getsize(f.path)
        except OSError:
            continue
        key = (size, f.frame_type, f.exptime, f.object, f.setup, f.date_obs, f.mjd_obs)
        buckets.setdefault(key, []).append(i)
    out = []
    for idx in buckets.values():
        if len(idx) < 2:
            continue
        by_hash = {}
        for i in idx:
            by_hash.setdefault(sha256_file(frames[i].path), []).append(i)
        for same in by_hash.values():
            if len(same) < 2:
                continue
            paths = tuple(sorted(frames[i].path for i in same))
            out.append(paths)
            for i in same:
                others = ", ".join(os.path.basename(p) for p in paths if p != frames[i].path)
                frames[i].warnings = (*frames[i].warnings,
                                      f"duplicate raw file: same content as {others}")
    return sorted(out)


def sha256_file(path):
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

