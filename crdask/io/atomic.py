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
* A write that fails in the operating system (disk full, quota, read-only
  filesystem, permission...) raises :class:`OutputWriteError`, whose text is
  one line naming the file being written (``out/x_cal.fits: no space left on
  device``); the temporary file is removed first.

Where outputs may go
    :class:`OutputRoot` is the one gate every pipeline write passes: its
    :meth:`~OutputRoot.path` refuses a name that resolves outside the output
    root (``..``, absolute names, symlinks out) or onto an input file or
    into an input folder; :func:`check_output_root` refuses an output root
    that is an input folder or holds input files directly, before anything
    runs; :func:`is_inside` tells whether a path lies in the output root (so
    a catalogue never takes outputs for inputs).
"""

import contextlib
import errno
import os
import uuid

__all__ = ["OutputExistsError", "OutputWriteError", "UnsafeOutputError", "OutputRoot",
           "atomic_open", "check_output_root", "is_inside", "temp_name_for", "is_temp_name",
           "write_error"]

_TMP_SUFFIX = ".tmp"


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not allowed."""

    def __init__(self, path):
        super().__init__(errno.EEXIST, "output exists (use --overwrite to replace it)",
                         os.fspath(path))

    def __str__(self):
        return f"output {self.filename} exists (use --overwrite to replace it)"


class OutputWriteError(OSError):
    """Writing an output failed in the operating system (disk full, quota,
    read-only filesystem, no permission, I/O error...).

    ``str(err)`` is one line naming the file: ``out/x_cal.fits: no space left
    on device``. ``errno`` is the system error number (None for a short write
    the system did not explain).
    """

    def __init__(self, path, errno_=None, reason=None):
        reason = reason or (os.strerror(errno_) if errno_ else "write failed")
        super().__init__(errno_, reason, os.fspath(path))

    def __str__(self):
        reason = self.strerror or "write failed"
        return f"{self.filename}: {reason[:1].lower()}{reason[1:]}"

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.filename, self.errno, self.strerror))


def write_error(path, error):
    """The :class:`OutputWriteError` behind ``error`` while writing ``path``, or None.

    Follows the exception chain (``__cause__``/``__context__``): astropy's own
    error path can hide the system error behind an unrelated
    ``AttributeError``. An :class:`OutputExistsError` is not a write error.

    Parameters
    ----------
    path : str or os.PathLike
        The file that was being written (named in the message).
    error : BaseException
        What the write raised.

    Returns
    -------
    OutputWriteError or None

    Examples
    --------
    >>> import errno
    >>> str(write_error("out/x.fits", OSError(errno.ENOSPC, "No space left on device")))
    'out/x.fits: no space left on device'
    """
    seen = set()
    e = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OutputWriteError):
            return e
        if isinstance(e, OutputExistsError):     # our own refusal, not a system error
            return None
        if isinstance(e, OSError):
            if e.errno:
                return OutputWriteError(path, e.errno, os.strerror(e.errno))
            msg = str(e)
            if "requested and" in msg and "written" in msg:   # numpy's short write
                return OutputWriteError(path, None, f"short write ({msg}; disk full?)")
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


class UnsafeOutputError(ValueError):
    """An output path or output root that could overwrite or mix with inputs."""


def _real(path):
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def is_inside(path, root):
    """True if ``path`` (resolved, symlinks followed) is ``root`` or lies under it.

    Examples
    --------
    >>> is_inside("/night/out/x.fits", "/night/out"), is_inside("/night/raw", "/night/out")
    (True, False)
    """
    p, r = _real(path), _real(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _split_inputs(inputs):
    files, dirs = set(), set()
    for p in inputs or ():
        rp = _real(p)
        (dirs if os.path.isdir(rp) else files).add(rp)
    return files, dirs


def check_output_root(root, inputs, *, what="output"):
    """Refuse an output folder that would mix outputs with raw inputs.

    Parameters
    ----------
    root : str or os.PathLike
        The output folder (need not exist yet).
    inputs : iterable of str or os.PathLike
        Input folders and/or input files of the run.
    what : str
        How the root is named in messages (e.g. the workflow key ``output``).

    Returns
    -------
    str
        The absolute output root.

    Raises
    ------
    UnsafeOutputError
        One line: the root is an existing file, is an input folder, or holds
        an input file directly (so outputs would land next to raw files and
        a rerun would catalogue them as inputs).

    Examples
    --------
    >>> check_output_root("/night/out", ["/night/raw"])
    '/night/out'
    """
    absroot = os.path.abspath(os.fspath(root))
    rroot = _real(root)
    if os.path.exists(rroot) and not os.path.isdir(rroot):
        raise UnsafeOutputError(f"{what}: {absroot} is an existing file, not a folder")
    files, dirs = _split_inputs(inputs)
    for d in sorted(dirs):
        if d == rroot:
            raise UnsafeOutputError(f"{what}: {absroot} is the input folder; choose a "
                                    "separate output folder (raw files are never a write "
                                    "target)")
    for f in sorted(files):
        if os.path.dirname(f) == rroot:
            raise UnsafeOutputError(f"{what}: {absroot} holds input file "
                                    f"{os.path.basename(f)}; choose a separate output "
                                    "folder (raw files are never a write target)")
    return absroot


class OutputRoot:
    """The one gate for pipeline writes: names inside an output folder only.

    Parameters
    ----------
    root : str or os.PathLike
        The output folder (created by :meth:`path` on first use of a name in
        it, not here).
    inputs : iterable of str or os.PathLike
        Input files and folders: never a write target.

    Examples
    --------
    >>> out = OutputRoot("/night/out", inputs=["/night/raw"])
    >>> out.path("r0042_cal.fits")
    '/night/out/r0042_cal.fits'
    >>> try:
    ...     out.path("../raw/r0042.fits")
    ... except UnsafeOutputError as e:
    ...     print(e)
    output ../raw/r0042.fits: resolves to /night/raw/r0042.fits, outside the output folder /night/out
    """

    def __init__(self, root, inputs=()):
        self.root = os.path.abspath(os.fspath(root))
        self._files, self._dirs = _split_inputs(inputs)

    def __repr__(self):
        return f"OutputRoot({self.root!r})"

    def __getstate__(self):  # picklable for Dask tasks
        return {"root": self.root, "_files": sorted(self._files), "_dirs": sorted(self._dirs)}

    def __setstate__(self, state):
        self.root = state["root"]
        self._files, self._dirs = set(state["_files"]), set(state["_dirs"])

    def contains(self, path):
        """True if ``path`` lies inside the output root (see :func:`is_inside`)."""
        return is_inside(path, self.root)

    def path(self, name):
        """The absolute path of output ``name`` (relative to the root), checked.

        Parameters
        ----------
        name : str or os.PathLike
            A relative name such as ``"r0042_cal.fits"`` or
            ``"previews/r0042.png"``.

        Returns
        -------
        str
            ``root/name``, normalised.

        Raises
        ------
        UnsafeOutputError
            One line naming ``name``: absolute, resolving outside the root
            (``..`` or a symlink out), equal to an input file, or inside an
            input folder.
        """
        name = os.fspath(name)
        if not name or os.path.isabs(name) or os.path.splitdrive(name)[0]:
            raise UnsafeOutputError(f"output {name!r}: must be a name relative to the "
                                    f"output folder {self.root}")
        full = os.path.normpath(os.path.join(self.root, name))
        real = _real(full)
        rroot = _real(self.root)
        if not (real.startswith(rroot.rstrip(os.sep) + os.sep)):
            raise UnsafeOutputError(f"output {name}: resolves to {real}, outside the "
                                    f"output folder {self.root}")
        if real in self._files:
            raise UnsafeOutputError(f"output {name}: is the input file {real}; raw "
                                    "files are never a write target")
        if os.path.dirname(real) in self._dirs:
            raise UnsafeOutputError(f"output {name}: would be written into the input "
                                    f"folder {os.path.dirname(real)}")
        if os.path.exists(real):
            st = os.stat(real)
            for f in self._files:  # a hard link to a raw file is the raw file
                try:
                    if os.path.samestat(st, os.stat(f)):
                        raise UnsafeOutputError(f"output {name}: is the input file {f} "
                                                "(hard link); raw files are never a "
                                                "write target")
                except FileNotFoundError:
                    continue
        return full

    def atomic_open(self, name, *, overwrite=False, mode="wb"):
        """:func:`atomic_open` on :meth:`path` ``(name)``; creates the folders."""
        full = self.path(name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return atomic_open(full, overwrite=overwrite, mode=mode)


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
    (checked before writing and again, atomically, at the rename), and
    :class:`OutputWriteError` (one line naming ``path``) when the system
    refuses the write -- also when the error surfaces inside the block.
    """
    if "w" not in mode:
        raise ValueError(f"mode must be a write mode, got {mode!r}")
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)
    tmp = temp_name_for(path)
    try:
        # O_EXCL: never follow or reuse an existing name; 0o666 & ~umask, like open().
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as e:
        raise OutputWriteError(path, e.errno, e.strerror) from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path, overwrite)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        err = write_error(path, e) if isinstance(e, Exception) else None
        if err is not None and err is not e:
            raise err from e
        raise
    fsync_path(os.path.dirname(path))
