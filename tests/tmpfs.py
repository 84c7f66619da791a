"""A small real tmpfs for disk-full tests (mounted when we are root).

``with small_tmpfs(DIR, "2m") as fs:`` mounts a tmpfs of that size on DIR
(created), yields a handle with ``fill(leave=bytes)`` (a filler file takes all
but ``leave`` bytes) and ``free()`` (removes the filler), and unmounts at the
end. If the mount is not possible (not root, no CAP_SYS_ADMIN, no ``mount``)
the test is skipped *with the reason*, never passed silently.
"""

import contextlib
import os
import shutil
import subprocess

import pytest


class _Tmpfs:
    def __init__(self, path):
        self.path = path
        self.filler = os.path.join(path, ".filler")

    def available(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave=0):
        """Take all but ``leave`` bytes (rounded to pages) with a filler file."""
        want = max(0, self.available() - int(leave))
        block = b"\xa5" * 65536
        with open(self.filler, "ab") as fh:
            while want > 0:
                n = min(len(block), want)
                try:
                    fh.write(block[:n])
                    fh.flush()
                except OSError:
                    break
                want -= n
        return self.available()

    def free(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.filler)


@contextlib.contextmanager
def small_tmpfs(path, size="2m"):
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip(f"disk-full test needs root to mount a {size} tmpfs on {path} "
                    f"(running as uid {os.geteuid()})")
    if shutil.which("mount") is None:
        pytest.skip("disk-full test: no 'mount' command to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"disk-full test: cannot mount a {size} tmpfs on {path}: "
                    f"{proc.stderr.strip() or proc.returncode}")
    try:
        yield _Tmpfs(path)
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
