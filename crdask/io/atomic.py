"""Atomic file writes: write to a temporary name in the same directory, then rename.

A reader (or a rerun) therefore sees either no output or a complete one, never
a partial file -- even if the process is killed half-way through writing.

* The temporary file lives in the destination directory (so the final rename
  stays on one filesystem and is atomic) and is named
  ``.<final name>.<random>.tmp``: hidden, and never mistaken for an output.
* The data are flushed and ``fsync``-ed before the rename, and the directory
  is ``fsync``-ed after it, so a crash of the machine right after a
  successful write does not leave an empty file behind.
* On any failure (including ``KeyboardInterrupt``) the temporary file is
  removed and the destination is left as it was. Only ``SIGKILL`` or a power
  cut can leave a ``.*.tmp`` file behind; it is never a valid output name.
* Without ``overwrite`` an existing destination is never replaced, even if it
  appears while we write: the commit is a hard link, which fails if the name
  exists (with a check-then-rename fallback on filesystems without hard
  links).
"""

import contextlib
import errno
import os
import uuid

__all__ = ["OutputExistsError", "atomic_open", "temp_name_for", "is_temp_name"]

_TMP_SUFFIX = ".tmp"


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not allowed."""

    def __init__(self, path):
        super().__init__(errno.EEXIST, "output exists (use --overwrite to replace it)",
                         os.fspath(path))

    def __str__(self):
        return f"output {self.filename} exists (use --overwrite to replace it)"


def temp_name_for(path):
    """A fresh temporary path next to ``path`` (same directory)."""
    path = os.fspath(path)
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")


def is_temp_name(name):
    """True for names made by :func:`temp_name_for` (for clean-up tools/tests)."""
    name = os.path.basename(os.fspath(name))
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


def fsync_path(path):
    """fsync a file or directory by path, where the platform allows it."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)


def _commit(tmp, path, overwrite):
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic; fails if ``path`` exists
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:
        # No hard links here (some network/object-store filesystems): the
        # best we can do is check, then rename.
        if os.path.lexists(path):
            raise OutputExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path, *, overwrite=False, mode="wb"):
    """Open ``path`` for writing, atomically.

    Yields a file object on a temporary file in the same directory; when the
    ``with`` block ends normally the file is flushed, synced and renamed to
    ``path``. If the block raises, the temporary file is removed and the
    exception propagates; ``path`` is untouched.

    Raises :class:`OutputExistsError` if ``path`` exists and not ``overwrite``
    (checked before writing and again, atomically, at the rename).
    """
    if "w" not in mode:
        raise ValueError(f"mode must be a write mode, got {mode!r}")
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)
    tmp = temp_name_for(path)
    # O_EXCL: never follow or reuse an existing name; 0o666 & ~umask, like open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path, overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_path(os.path.dirname(path))
