"""File checksums: SHA-256 of files, cached by stat data, and input closures (layer 3).

Checksum cache
    :func:`file_sha256` with a ``cache_dir`` (the ledger uses
    ``OUT/ledger/sha256/``) hashes an input once: the result is cached as
    ``<cache_dir>/<key>.json``, one small file per input (so concurrent
    workers never conflict), keyed by the file's real path, size,
    modification time (ns), inode and device. A rerun over unchanged inputs
    therefore reads one small JSON file per input instead of every raw byte;
    any change to the file (content rewritten, replaced by a copy or by
    rsync even with the old mtime kept) changes the key and triggers a new
    hash. (Like make and git, it trusts the stat data: a file rewritten in
    place with the same size and its old mtime put back is not noticed;
    delete ``OUT/ledger/sha256/`` after such surgery.) A file modified less
    than two seconds before it is hashed is hashed
    but not cached (it may still be being written within the same timestamp
    tick).
"""

import hashlib
import json
import os
import time

from .atomic import atomic_open

__all__ = ["hash_file", "file_sha256", "closure_digest", "stat_key", "describe_output",
           "output_problems", "remember"]

_CHUNK = 1 << 20
_RACY_SECONDS = 2.0


def hash_file(path):
    """SHA-256 (hex) of the bytes of the file at ``path`` (read in 1 MiB blocks)."""
    with open(path, "rb") as fh:
        if hasattr(hashlib, "file_digest"):      # Python >= 3.11
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def closure_digest(inputs):
    """One SHA-256 (hex) over an input closure ``{label: sha256}``.

    Order-independent; used as ``input_sha256`` of entries that have no
    single input file (a group, the masters).

    Examples
    --------
    >>> closure_digest({"b": "2", "a": "1"}) == closure_digest({"a": "1", "b": "2"})
    True
    """
    h = hashlib.sha256()
    for label, sha in sorted((str(k), str(v)) for k, v in dict(inputs).items()):
        h.update(label.encode("utf-8", "surrogateescape") + b"\0" + sha.encode() + b"\n")
    return h.hexdigest()


def stat_key(st):
    """The stat data that identify one version of a file (size, mtime ns, inode, device)."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
            "dev": st.st_dev}


def file_sha256(path, cache_dir=None, *, write_cache=True, memo=None):
    """SHA-256 (hex) of the file at ``path``.

    With ``cache_dir``, the digest is cached there per file (see the module
    notes): an unchanged file is not read again. ``write_cache=False`` only
    reads the cache (a dry run must not create it). ``memo``: a dict kept
    by the caller for one run and filled by :func:`remember` with the
    outputs the run has just written and recorded, keyed by the same stat
    data: complete files too fresh for the disk cache, such as the masters,
    which every science frame's closure names (re-hashed per frame, they
    cost 1.8 s of a 2048^2 night). A fresh input is still hashed each time.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x")
    >>> _ = open(p, "wb").write(b"abc")
    >>> file_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    path = os.fspath(path)
    if cache_dir is None:
        return hash_file(path)
    real = os.path.realpath(path)
    st = os.stat(real)
    key = {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "ino": st.st_ino, "dev": st.st_dev}
    mkey = tuple(key.values())
    if memo is not None and mkey in memo:
        return memo[mkey]
    fname = os.path.join(os.fspath(cache_dir),
                         hashlib.sha256(real.encode("utf-8", "surrogateescape"))
                         .hexdigest()[:32] + ".json")
    try:
        with open(fname, encoding="utf-8") as fh:
            cached = json.load(fh)
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hash_file(real)
    st2 = os.stat(real)
    unchanged = (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns,
                                                                st.st_ino)
    if write_cache and unchanged and time.time() - st.st_mtime_ns / 1e9 >= _RACY_SECONDS:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with atomic_open(fname, overwrite=True, mode="w") as fh:
                json.dump({"key": key, "sha256": digest}, fh)
        except OSError:  # a read-only output dir only costs a re-hash next time
            pass
    return digest


def describe_output(path):
    """What :func:`output_problems` checks later: SHA-256 and stat data of ``path``.

    A file that changes while it is hashed gets size -1 (never trusted).
    """
    st = os.stat(path)
    digest = hash_file(path)
    st2 = os.stat(path)
    if stat_key(st2) != stat_key(st):   # changed while hashed: never trusted
        return {"size": -1, "sha256": None}
    return {"sha256": digest, **stat_key(st)}


def remember(memo, path, record):
    """Put the digest of a :func:`describe_output` record of ``path`` into a
    :func:`file_sha256` ``memo`` (an output just written and hashed need not
    be hashed again as the next step's input). Untrusted records are left
    out."""
    if record.get("sha256") and record.get("size", -1) >= 0:
        real = os.path.realpath(path)
        memo[(real, *(record[k] for k in ("size", "mtime_ns", "ino", "dev")))] = \
            record["sha256"]


def output_problems(outputs, verify="stat"):
    """Lines saying why recorded outputs are not intact (``[]``: all intact).

    Parameters
    ----------
    outputs : dict or None
        ``{path: record}`` as made by :func:`describe_output`.
    verify : {'stat', 'full', 'size'}
        'size' compares sizes only; 'stat' also re-hashes a file whose stat
        data differ from the record; 'full' always re-hashes.
    """
    problems = []
    for path, rec in sorted((outputs or {}).items()):
        try:
            st = os.stat(path)
        except OSError as e:
            problems.append(f"{path}: {e.strerror or 'missing'}")
            continue
        if st.st_size != rec.get("size"):
            problems.append(f"{path}: size {st.st_size}, recorded {rec.get('size')}")
            continue
        if verify == "size":
            continue
        if verify == "stat" and {k: rec.get(k) for k in ("size", "mtime_ns", "ino", "dev")} \
                == stat_key(st):
            continue
        try:
            digest = hash_file(path)
        except OSError as e:
            problems.append(f"{path}: {e.strerror or e}")
            continue
        if digest != rec.get("sha256"):
            problems.append(f"{path}: SHA-256 differs from the one recorded at write "
                            "time")
    return problems
