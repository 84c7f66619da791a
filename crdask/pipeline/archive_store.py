"""Where an archive's nights come from and where their outputs go (layer 4).

:func:`archive_inputs` and :func:`archive_outputs` give the two sides of
:func:`~crdask.pipeline.archive.run_archive` for a local (or shared
filesystem, or ``file://``) path or an fsspec URL (``s3://...``):

* inputs: ``nights(pattern)`` lists the night folders holding FITS files,
  ``digest(name)`` fingerprints a night's files (names, sizes and
  modification times locally; names, sizes and ETags in a store),
  ``stage(name)`` gives the local folder the night is reduced from (the
  folder itself locally; a checksummed copy in the scratch folder for a
  URL, see :meth:`crdask.io.remote.RemoteFolder.stage`) and
  ``release(name)`` drops that copy.
* outputs: ``local_root`` is where nights are reduced (the output root
  itself, or ``SCRATCH/out`` for a URL); ``state(name)`` reads a night's
  commit marker ``archive/<name>.json``; ``finished(name, state)`` says
  whether the outputs it lists are still there; ``commit(name, doc)``
  writes the marker -- for a URL after uploading the night's outputs
  (:meth:`~crdask.io.remote.RemoteFolder.publish`), the marker removed
  first and written last, so a rerun trusts only a complete night.

Example
-------
>>> import tempfile
>>> side = archive_outputs(tempfile.mkdtemp())
>>> side.state("20261130") is None
True
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path

from ..io.atomic import atomic_open
from ..io.catalog import list_fits_files
from ..io.remote import RemoteFolder, is_url, redact
from .lock import LOCK_NAME

__all__ = ["archive_inputs", "archive_outputs", "default_scratch", "write_json", "read_json",
           "STATE_DIR", "NOT_PUBLISHED"]

STATE_DIR = "archive"
#: What stays in the scratch folder, never uploaded: the Zarr intermediates
#: (a resume point, large) and the lock (local to the staging host).
NOT_PUBLISHED = ("intermediate.zarr", LOCK_NAME)


def write_json(path, doc):
    """Write ``doc`` as JSON to ``path`` atomically (folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, overwrite=True, mode="w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)


def read_json(path):
    """The JSON document at ``path``, or None (missing or unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def default_scratch(output):
    """``$CRDASK_SCRATCH`` or ``~/.cache/crdask/archive/<hash of the output URL>``:
    one scratch folder per output, so a rerun finds its staged nights and
    ledgers again."""
    base = os.environ.get("CRDASK_SCRATCH") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "crdask", "archive")
    return Path(base) / hashlib.sha256(redact(output).encode()).hexdigest()[:16]


def _local_path(text):
    text = os.fspath(text)
    return Path(text.split("://", 1)[1] if text.lower().startswith("file://") else text)


class _LocalInputs:
    def __init__(self, root):
        self.root = _local_path(root)
        self.label = str(self.root)

    def nights(self, pattern):
        if not self.root.is_dir():
            raise NotADirectoryError(f"archive {self.root}: not a folder")
        return {e.name: Path(e.path) for e in sorted(os.scandir(self.root), key=lambda e: e.name)
                if e.is_dir() and not e.name.startswith(".")
                and fnmatch.fnmatchcase(e.name, pattern) and list_fits_files(e.path)}

    def digest(self, name):
        h = hashlib.sha256()
        for p in sorted(list_fits_files(self.root / name)):
            st = os.stat(p)
            h.update(f"{os.path.basename(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def stage(self, name):
        return self.root / name

    def release(self, name):
        pass


class _RemoteInputs:
    def __init__(self, url, storage_options, scratch):
        self.folder = RemoteFolder(url, storage_options)
        self.label = redact(url)
        self.scratch = Path(scratch if scratch is not None else default_scratch(url)) / "raw"
        self._objects = {}

    def nights(self, pattern):
        found = {}
        for name in self.folder.folders():
            if name.startswith(".") or not fnmatch.fnmatchcase(name, pattern):
                continue
            objs = self.folder.objects(name)
            if objs:
                found[name] = self.folder.where(name)
                self._objects[name] = objs
        return found

    def digest(self, name):
        h = hashlib.sha256()
        for o in self._objects[name]:
            h.update((o.key() + "\n").encode())
        return h.hexdigest()

    def stage(self, name):
        return Path(self.folder.stage(name, self.scratch / name, self._objects[name]))

    def release(self, name):
        shutil.rmtree(self.scratch / name, ignore_errors=True)


def archive_inputs(root, storage_options=None, scratch=None):
    """The input side for ``root`` (path, ``file://`` or fsspec URL)."""
    if is_url(root):
        return _RemoteInputs(root, storage_options, scratch)
    return _LocalInputs(root)


class _LocalOutputs:
    remote = False

    def __init__(self, root):
        self.local_root = _local_path(root)
        self.label = str(self.local_root)

    def state(self, name):
        return read_json(self.local_root / STATE_DIR / f"{name}.json")

    def finished(self, name, state):
        return (self.local_root / name / "report.json").exists()

    def invalidate(self, name):
        (self.local_root / STATE_DIR / f"{name}.json").unlink(missing_ok=True)

    def commit(self, name, doc):
        write_json(self.local_root / STATE_DIR / f"{name}.json", doc)
        return doc

    def publish_summary(self, paths):
        pass


class _RemoteOutputs:
    remote = True

    def __init__(self, url, storage_options, scratch):
        self.folder = RemoteFolder(url, storage_options)
        self.label = redact(url)
        self.local_root = Path(scratch if scratch is not None else default_scratch(url)) / "out"

    def state(self, name):
        return self.folder.read_json(f"{STATE_DIR}/{name}.json")

    def finished(self, name, state):
        objects = state.get("objects") or {}
        return "report.json" in objects and all(
            self.folder.size(f"{name}/{k}") == v["size"] for k, v in objects.items())

    def invalidate(self, name):
        self.folder.remove(f"{STATE_DIR}/{name}.json")

    def commit(self, name, doc):
        # the marker goes first and comes back last: a night whose upload
        # was cut off has no marker, and a rerun redoes it
        self.invalidate(name)
        objects = self.folder.publish(self.local_root / name, name, skip=NOT_PUBLISHED)
        doc = {**doc, "objects": objects}
        self.folder.put_json(f"{STATE_DIR}/{name}.json", doc)
        return doc

    def publish_summary(self, paths):
        for p in paths.values():
            self.folder.put_bytes(Path(p).name, Path(p).read_bytes())


def archive_outputs(output, storage_options=None, scratch=None):
    """The output side for ``output`` (path, ``file://`` or fsspec URL)."""
    if is_url(output):
        return _RemoteOutputs(output, storage_options, scratch)
    return _LocalOutputs(output)
