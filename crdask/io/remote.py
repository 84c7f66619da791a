"""Archives and outputs behind fsspec URLs: staging in, publishing out (layer 3).

FITS readers, Zarr intermediates, the ledger and the lock all want a POSIX
filesystem (random access, atomic rename, ``O_EXCL``); an object store gives
none of these. So a night behind a URL (``s3://bucket/raw/20261130``) is
reduced in three steps:

1. **stage**: :meth:`RemoteFolder.stage` copies the night's FITS objects to
   a local scratch folder. Each object is downloaded to a hidden temporary
   name, its size (and, where the store's ETag is a plain MD5, its MD5) is
   checked against the listing, and only then renamed into place; a
   manifest ``.staged.json`` records name, size, ETag and SHA-256, so a
   rerun reuses an intact staged copy and re-downloads a changed or damaged
   one. The source is only ever read (``open(..., "rb")``).
2. **reduce** locally, with the usual ledger and lock (in the scratch
   folder, so the lock is local to the staging host).
3. **publish**: :meth:`RemoteFolder.publish` uploads each output file to a
   temporary key beside its final key, reads it back and compares size and
   SHA-256, then moves it to the final key (on S3 a server-side copy: a
   reader sees the old object or the new one, never a part). A night's
   commit marker is written by the caller after every object is in place.

Credentials never pass through here as text: storage options go to fsspec
as given, URLs are shown through :func:`redact`, and :func:`scrub` blanks
the values of storage options and of the usual secret environment
variables in any message.

Nothing read from a store is unpickled: objects are FITS bytes or JSON.

Example
-------
>>> redact("s3://AKIA:hunter2@bucket/raw")
's3://***@bucket/raw'
>>> is_url("s3://bucket/raw"), is_url("/data/raw"), is_url("file:///data/raw")
(True, False, False)
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import uuid

from .catalog import FITS_SUFFIXES

__all__ = ["RemoteError", "RemoteFolder", "RemoteObject", "is_url", "redact", "scrub",
           "SECRET_ENV", "STAGED_MANIFEST"]

#: Environment variables whose values never appear in a message.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
              "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_KEY",
              "AZURE_STORAGE_CONNECTION_STRING")
STAGED_MANIFEST = ".staged.json"
_BLOCK = 1 << 20
#: What s3fs needs for each scheme, for the one-line "install" error.
_EXTRA = {"s3": ("s3fs", "crdask[s3]"), "s3a": ("s3fs", "crdask[s3]"),
          "gs": ("gcsfs", "gcsfs"), "gcs": ("gcsfs", "gcsfs"), "az": ("adlfs", "adlfs"),
          "abfs": ("adlfs", "adlfs")}


class RemoteError(OSError):
    """A URL that cannot be used, or a transfer that failed its check (one line)."""

    def __str__(self):
        return str(self.args[0]) if self.args else "remote storage error"


def is_url(text):
    """True for a URL with a scheme fsspec must handle (``file://`` and plain
    paths are local)."""
    text = os.fspath(text)
    return "://" in text and text.split("://", 1)[0].lower() not in ("", "file")


def redact(url):
    """``url`` without user information (``s3://key:secret@bucket`` ->
    ``s3://***@bucket``) and without a query string."""
    text = os.fspath(url)
    text = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", text)
    return text.split("?", 1)[0]


def _secrets(storage_options):
    found = []

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, str) and len(v) >= 6 and "://" not in v:
            found.append(v)      # endpoint URLs are not secrets; keys and tokens are
    walk(storage_options or {})
    found += [os.environ[k] for k in SECRET_ENV if len(os.environ.get(k, "")) >= 6]
    return sorted(set(found), key=len, reverse=True)


def scrub(text, storage_options=None):
    """``text`` with every storage-option value and secret environment value
    replaced by ``***`` (and URLs' user information removed).

    Example
    -------
    >>> scrub("denied for key s3cr3t-value", {"secret": "s3cr3t-value"})
    'denied for key ***'
    """
    text = str(text)
    for s in _secrets(storage_options):
        text = text.replace(s, "***")
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text)


class RemoteObject:
    """One listed object: ``name`` (last path part), ``path`` (the store's
    key), ``size`` (bytes) and ``etag`` (the store's content tag or None)."""

    __slots__ = ("name", "path", "size", "etag")

    def __init__(self, name, path, size, etag):
        self.name, self.path, self.size, self.etag = name, path, int(size), etag

    def key(self):
        return f"{self.name}\0{self.size}\0{self.etag or ''}"


def _etag(info):
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return str(tag).strip('"') if tag else None


def _plain_md5(etag):
    """The ETag if it is a plain MD5 of the bytes (single-part S3 upload)."""
    return etag if etag and re.fullmatch(r"[0-9a-f]{32}", etag) else None


class RemoteFolder:
    """A folder (prefix) behind an fsspec URL.

    Parameters
    ----------
    url : str
        ``s3://bucket/prefix`` (needs s3fs: ``pip install 'crdask[s3]'``),
        or any URL fsspec knows (``memory://``, ``gs://`` ...).
    storage_options : dict, optional
        Passed to fsspec as given (``endpoint_url``, ``key``, ``secret``,
        ``anon``, ``client_kwargs``...); for S3, credentials may equally come
        from the usual ``AWS_*`` variables or profiles.

    Example
    -------
    >>> f = RemoteFolder("memory://crdask-doc/raw")
    >>> f.put_bytes("n1/a.fits", b"x" * 2880)
    >>> [o.name for o in f.objects("n1")]
    ['a.fits']
    """

    def __init__(self, url, storage_options=None):
        import fsspec

        self.url = os.fspath(url).rstrip("/")
        self.options = dict(storage_options or {})
        scheme = self.url.split("://", 1)[0].lower()
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.options)
        except ImportError:
            module, extra = _EXTRA.get(scheme, (f"the fsspec backend for {scheme}://", None))
            hint = f"pip install '{extra}'" if extra else "install it"
            raise RemoteError(f"{redact(self.url)}: {scheme}:// needs {module} ({hint})") \
                from None
        except (ValueError, TypeError) as e:
            raise RemoteError(f"{redact(self.url)}: {scrub(e, self.options)}") from None
        self.root = self.root.rstrip("/")

    def __repr__(self):
        return f"RemoteFolder({redact(self.url)!r})"

    def where(self, rel=""):
        """The URL (redacted) of ``rel`` under this folder, for messages."""
        return redact(self.url + ("/" + rel if rel else ""))

    def _path(self, rel):
        parts = [p for p in str(rel).split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise RemoteError(f"{self.where(rel)}: '.' or '..' in an object name")
        return posixpath.join(self.root, *parts) if parts else self.root

    def _fail(self, rel, e):
        what = "no such object or folder" if isinstance(e, FileNotFoundError) \
            else f"{type(e).__name__}: {e}"
        return RemoteError(scrub(f"{self.where(rel)}: {what}".splitlines()[0], self.options))

    # --- listing -------------------------------------------------------------------

    def folders(self):
        """Names of the sub-folders (common prefixes) directly under this folder."""
        try:
            entries = self.fs.ls(self.root, detail=True, refresh=True)
        except FileNotFoundError:
            raise NotADirectoryError(f"{self.where()}: no such folder (bucket or prefix)") \
                from None
        except Exception as e:  # noqa: BLE001 - any backend error becomes one line
            raise self._fail("", e) from None
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries
                      if e.get("type") == "directory")

    def objects(self, rel, suffixes=FITS_SUFFIXES):
        """The :class:`RemoteObject` s directly in ``rel`` whose names end
        with one of ``suffixes`` (any case; hidden names skipped), sorted."""
        try:
            entries = self.fs.ls(self._path(rel), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001
            raise self._fail(rel, e) from None
        out = []
        for e in entries:
            name = posixpath.basename(e["name"].rstrip("/"))
            if e.get("type") == "file" and not name.startswith(".") \
                    and name.lower().endswith(tuple(suffixes)):
                out.append(RemoteObject(name, e["name"], e.get("size") or 0, _etag(e)))
        return sorted(out, key=lambda o: o.name)

    def size(self, rel):
        """Size in bytes of the object ``rel``, or None if there is none."""
        try:
            return int(self.fs.info(self._path(rel))["size"])
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._fail(rel, e) from None

    # --- small documents ---------------------------------------------------------------

    def read_json(self, rel):
        """The JSON document at ``rel`` (plain ``json.loads``), or None if
        there is none or it does not parse."""
        try:
            with self.fs.open(self._path(rel), "rb") as fh:
                return json.loads(fh.read().decode())
        except FileNotFoundError:
            return None
        except ValueError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._fail(rel, e) from None

    def put_bytes(self, rel, data):
        """Write ``data`` to ``rel`` through a temporary key (see :meth:`publish`)."""
        self._commit(rel, lambda tmp: self.fs.pipe_file(tmp, data),
                     len(data), hashlib.sha256(data).hexdigest())

    def put_json(self, rel, doc):
        self.put_bytes(rel, json.dumps(doc, indent=1, sort_keys=True).encode())

    def remove(self, rel):
        """Delete the object ``rel`` if it exists."""
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001
            raise self._fail(rel, e) from None

    # --- staging in ------------------------------------------------------------------

    def stage(self, rel, dest, objects=None):
        """Copy the FITS objects of ``rel`` into the local folder ``dest``.

        Reuses a staged file whose manifest entry has the object's size and
        ETag and whose bytes still have the recorded SHA-256; downloads the
        others (to a hidden temporary file, checked, then renamed). Files in
        ``dest`` that are no longer objects are removed. Returns ``dest``.
        Raises :class:`RemoteError` (one line) on a failed or short transfer.
        """
        from .atomic import atomic_open
        from .checksums import hash_file

        objects = self.objects(rel) if objects is None else objects
        os.makedirs(dest, exist_ok=True)
        manifest_path = os.path.join(dest, STAGED_MANIFEST)
        try:
            with open(manifest_path) as fh:
                old = json.load(fh)
        except (OSError, ValueError):
            old = {}
        new = {}
        for obj in objects:
            local = os.path.join(dest, obj.name)
            rec = old.get(obj.name)
            if rec and rec.get("size") == obj.size and rec.get("etag") == obj.etag \
                    and os.path.isfile(local) and os.path.getsize(local) == obj.size \
                    and hash_file(local) == rec.get("sha256"):
                new[obj.name] = rec
                continue
            new[obj.name] = self._download(obj, local)
        for name in set(old) - set(new):
            try:
                os.unlink(os.path.join(dest, name))
            except FileNotFoundError:
                pass
        with atomic_open(manifest_path, overwrite=True, mode="w") as fh:
            json.dump(new, fh, indent=1, sort_keys=True)
        return dest

    def _download(self, obj, local):
        from .atomic import atomic_open

        sha, md5, n = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        try:
            with self.fs.open(obj.path, "rb") as src, \
                    atomic_open(local, overwrite=True) as dst:
                for block in iter(lambda: src.read(_BLOCK), b""):
                    sha.update(block)
                    md5.update(block)
                    n += len(block)
                    dst.write(block)
                if n != obj.size:
                    raise RemoteError(f"{self.where(obj.path[len(self.root):])}: read {n} "
                                      f"bytes, the listing says {obj.size}")
                want = _plain_md5(obj.etag)
                if want and md5.hexdigest() != want:
                    raise RemoteError(f"{self.where(obj.path[len(self.root):])}: MD5 of "
                                      "the bytes read differs from the store's ETag")
        except RemoteError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._fail(obj.path[len(self.root):].lstrip("/"), e) from None
        return {"size": n, "etag": obj.etag, "sha256": sha.hexdigest()}

    # --- publishing out --------------------------------------------------------------

    def publish(self, local_dir, rel, skip=()):
        """Upload every file under the local folder ``local_dir`` to
        ``rel/<relative path>``.

        Each file goes to a hidden temporary key in the same prefix, is read
        back and checked (size, SHA-256), then moved to its final key. Names
        in ``skip`` (first path parts, e.g. ``intermediate.zarr``) and
        hidden temporary files are left out. Returns ``{relative path:
        {"size", "sha256"}}``.
        """
        from .atomic import is_temp_name
        from .checksums import hash_file

        done = {}
        for base, dirs, files in os.walk(local_dir):
            relbase = os.path.relpath(base, local_dir)
            dirs[:] = sorted(d for d in dirs if relbase != "." or d not in skip)
            for name in sorted(files):
                if is_temp_name(name) or (relbase == "." and name in skip):
                    continue
                path = os.path.join(base, name)
                sub = name if relbase == "." else posixpath.join(*relbase.split(os.sep), name)
                size, sha = os.path.getsize(path), hash_file(path)
                self._commit(f"{rel}/{sub}", lambda tmp, p=path: self.fs.put_file(p, tmp),
                             size, sha)
                done[sub] = {"size": size, "sha256": sha}
        return done

    def _commit(self, rel, write, size, sha):
        final = self._path(rel)
        head, tail = posixpath.split(final)
        tmp = posixpath.join(head, f".{tail}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            write(tmp)
            got, n = hashlib.sha256(), 0
            with self.fs.open(tmp, "rb") as fh:
                for block in iter(lambda: fh.read(_BLOCK), b""):
                    got.update(block)
                    n += len(block)
            if n != size or got.hexdigest() != sha:
                raise RemoteError(f"{self.where(rel)}: the uploaded copy differs from the "
                                  f"local file ({n} of {size} bytes, or a different SHA-256)")
            self.fs.mv(tmp, final)
            if int(self.fs.info(final)["size"]) != size:
                raise RemoteError(f"{self.where(rel)}: size after the move differs")
        except RemoteError:
            self._drop(tmp)
            raise
        except Exception as e:  # noqa: BLE001
            self._drop(tmp)
            raise self._fail(rel, e) from None

    def _drop(self, path):
        try:
            self.fs.rm_file(path)
        except Exception:  # noqa: BLE001 - best effort; a leftover is a hidden .tmp key
            pass
