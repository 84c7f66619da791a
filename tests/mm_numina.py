"""Run the real numina-crmasks (PyPI ``numina``) the way a user does: write
its YAML, run the ``numina-crmasks`` console script non-interactively with a
headless matplotlib backend, read its products."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits


def write_frames(frames, folder, stem="exp"):
    """Write float32 frames as FITS files; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(frames):
        p = folder / f"{stem}{i + 1}.fits"
        fits.PrimaryHDU(np.asarray(f, dtype=np.float32)).writeto(p, overwrite=True)
        paths.append(str(p))
    return paths


def write_yaml(path, images, gain, rnoise, bias, requirements):
    """numina-crmasks' YAML: images, gain, rnoise, bias and ``requirements``."""
    doc = {"images": [str(p) for p in images], "gain": float(gain), "rnoise": float(rnoise),
           "bias": float(bias), "requirements": dict(requirements)}
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def numina_script():
    exe = shutil.which("numina-crmasks")
    if exe is None:
        exe = str(Path(sys.executable).with_name("numina-crmasks"))
    return exe


def run_numina(yaml_path, outdir):
    """Run numina-crmasks on ``yaml_path`` into ``outdir``; return the masks
    (dict name -> bool array) read from its crmasks.fits."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([numina_script(), str(yaml_path), "--output_dir", str(outdir),
                          "--log-level", "WARNING"], env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, cwd=outdir)
    if res.returncode != 0:
        raise RuntimeError(f"numina-crmasks failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return read_masks(outdir / "crmasks.fits")


def read_masks(path):
    with fits.open(path) as h:
        return {hdu.name: hdu.data.astype(bool) for hdu in h[1:]
                if hdu.is_image and hdu.data is not None and hdu.data.dtype == np.uint8}


def jaccard(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)
