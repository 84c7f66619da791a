"""Report previews drawn while the night runs, off the critical path (layer 4).

The PNG previews of a run (:mod:`crdask.pipeline.previews`) used to be drawn
one after another once every frame was done (~2.4 s of a 28 s night of
2048^2 frames, single-threaded, after the last task). :class:`LivePreviews`
draws them in one background thread of the client process instead: the
masters as soon as they are written, the first science frames as soon as
their tasks return, so by the time the last frame is done only the small
"CR pixels per frame" chart is left to draw. The thread only reads finished
files (the masters and a frame's output) and calibrates the frame's raw
file again for its "before" image (30 ms, the frame task's own code, so the
same bits), rather than trusting a calibrated frame in the intermediates,
which a run that keeps none would leave as an earlier run wrote it.

Example
-------
>>> live = LivePreviews("out", before=None)          # doctest: +SKIP
>>> live.masters({"bias": "out/master_bias.fits"})  # doctest: +SKIP
>>> items = live.finish(frames)                     # doctest: +SKIP
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..calib import bits
from .frame_task import frame_stem
from .previews import plot_available, render

__all__ = ["LivePreviews", "N_SCIENCE"]

#: Science frames shown in a report.
N_SCIENCE = 3


class LivePreviews:
    """Draws a run's previews in a background thread.

    Parameters
    ----------
    out_dir : path, the run's output folder.
    before : callable or None
        ``before(file, master_paths)``: the calibrated frame (e-, 2-D) of the
        raw file named ``file`` (a base name), before CR cleaning. Without it
        no science frame gets a preview.
    """

    def __init__(self, out_dir, before=None):
        self.out_dir = out_dir
        self.before = before
        self.master_paths = {}
        self.enabled = plot_available()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="crdask-previews") \
            if self.enabled else None
        self._jobs = []
        self._shown = set()

    def masters(self, master_paths):
        """Queue the masters' previews (and keep their paths, for
        ``before``)."""
        self.master_paths = dict(master_paths or {})
        if self.enabled and master_paths:
            self._jobs.append(self._pool.submit(self._masters, dict(master_paths)))

    def frame(self, summary):
        """Queue a science frame's preview if fewer than :data:`N_SCIENCE`
        are queued and the frame is finished."""
        if not self.enabled or self.before is None or len(self._shown) >= N_SCIENCE:
            return
        if summary.get("status") not in ("done", "skipped") or not summary.get("output"):
            return
        stem = frame_stem(summary["file"])
        if stem in self._shown:
            return
        self._shown.add(stem)
        self._jobs.append(self._pool.submit(self._science, stem, summary["file"],
                                            summary["output"]))

    def finish(self, frames):
        """Queue what is left (frames skipped by this run, the CR-count
        chart), wait, and return the preview items for the report (None
        without matplotlib)."""
        if not self.enabled:
            return None
        science = [f for f in frames if f.get("type") == "science"
                   and f["status"] in ("done", "skipped")]
        for f in science:
            self.frame(f)
        counts = [(f["file"], f.get("cr_pixels") or 0) for f in science]
        if counts:
            self._jobs.append(self._pool.submit(render, self.out_dir, {"cr_counts": counts}))
        items = []
        for job in self._jobs:
            try:
                items.extend(job.result() or [])
            except Exception as exc:   # a preview must never cost the report
                items.append({"kind": "preview", "name": "-", "path": None,
                              "error": " ".join(f"{type(exc).__name__}: {exc}".split())})
        self._pool.shutdown()
        return items

    # -- jobs (background thread) -------------------------------------------
    def _masters(self, master_paths):
        from astropy.io import fits
        data = {key: fits.getdata(p) for key, p in sorted(master_paths.items())}
        return render(self.out_dir, {"masters": data})

    def _science(self, stem, file, output):
        from astropy.io import fits
        before = self.before(file, self.master_paths)
        with fits.open(output) as hdul:
            after = hdul[0].data.astype(np.float32)
            crmask = (hdul["MASK"].data & bits.COSMIC_RAY) != 0
        return render(self.out_dir, {"science": [{"name": stem, "before": before,
                                                  "after": after, "crmask": crmask}]})
