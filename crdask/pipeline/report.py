"""The run report of ``crdask run``: ``report.json``, ``report.md`` and PNG previews.

The pipeline builds a JSON-serialisable *run record* (versions, workflow,
times, scheduler, one entry per input frame, masters, failures and, for
simulated nights, CR detection quality against the truth) and calls
:func:`write_report` once at the end of the night.

Decisions:

* ``report.json`` is the record itself, indented, keys sorted, strict JSON:
  numpy scalars/arrays and paths are converted to plain values and a
  non-finite float (e.g. a recall with no true CRs) is written as ``null``,
  so ``jq``, JavaScript or a spreadsheet can read it. A plain record
  round-trips: ``json.load`` gives back an equal dict.
* ``report.md`` is for people: a header (crdask and library versions,
  workflow and its hash, start/end/duration, scheduler), a count of frames by
  status, the masters with how many inputs went into each, a table of
  science frames (file, group, status, CR pixels, seconds, and recall / false
  positives when the truth is known), a table of the other (calibration)
  frames, a "Set aside / failures" section with one reason per file, the CR
  detection quality against the truth, and the previews as relative links
  (``previews/....png``), so the directory can be moved or served as is.
* The report never refuses to be written: missing record fields are shown
  as ``-``, and a preview that fails is listed with its reason instead.
  ``report.json`` is written before any preview is drawn.
* Every file is written atomically (temporary name, then rename) and
  replaces the report of an earlier run in the same directory.
* Without matplotlib (the ``plot`` extra) no PNG is made and ``report.md``
  says ``previews need the plot extra: pip install crdask[plot]``.
* With ``steps.qa.inject`` each science frame's entry holds ``qa``, its
  injection-recovery figures (:class:`crdask.pipeline.qa.CompletenessReport`
  as a dict); the record gets ``qa`` (frames measured, the curve's PNG
  ``qa_completeness.png``) and ``report.md`` a "CR completeness" table:
  recall per S/N bin, recall above 10 sigma, extra false pixels.
"""

import json
import math
import os
from pathlib import PurePath

import numpy as np

from ..io.atomic import atomic_open
from .previews import PLOT_EXTRA_HINT
from .previews import render as render_previews

__all__ = ["write_report", "render_markdown", "record_to_json"]

_MISSING = "-"
_BAD_STATUS = ("failed", "set aside")
_STATUS_ORDER = ("done", "skipped", "failed", "set aside")


# --------------------------------------------------------------------------- JSON

def _plain(obj):
    """A strict-JSON-able copy of ``obj`` (numpy/Path converted, NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (PurePath, os.PathLike)):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def record_to_json(record):
    """The text of ``report.json``: the record, indented, keys sorted, strict JSON."""
    return json.dumps(_plain(record), indent=2, sort_keys=True, allow_nan=False,
                      ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- text helpers

def _one_line(x):
    return " ".join(str(x).split())


def _cell(x):
    """A table cell: one line, pipes escaped, ``-`` when missing."""
    if x is None or x == "":
        return _MISSING
    return _one_line(x).replace("|", "\\|")


def _code(x, table=True):
    """A file name as code (underscores stay literal); pipes escaped in tables."""
    if x is None or x == "":
        return _MISSING
    s = _one_line(x)
    if table:
        s = s.replace("|", "\\|")
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def _num(x, fmt="{}"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return _MISSING
    try:
        return fmt.format(x)
    except (TypeError, ValueError):
        return _cell(x)


def _int(x):
    if isinstance(x, bool) or x is None:
        return _cell(x)
    if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer()):
        return str(int(x))
    return _num(x)


def _duration(seconds):
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return _MISSING
    s = f"{seconds:.1f} s"
    if seconds >= 60:
        m, sec = divmod(int(round(seconds)), 60)
        h, m = divmod(m, 60)
        s += f" ({h} h {m:02d} min {sec:02d} s)" if h else f" ({m} min {sec:02d} s)"
    return s


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _rel(path, base):
    rel = os.path.relpath(os.fspath(path), os.fspath(base))
    return PurePath(rel).as_posix()


def _link(path):
    return f"<{path}>" if any(c in path for c in " ()<>") else path


# --------------------------------------------------------------------------- sections

def _header(record):
    ver = record.get("crdask_version") or _MISSING
    lines = ["# crdask run report", ""]
    libs = record.get("versions") or {}
    libtxt = ", ".join(f"{k} {v}" for k, v in libs.items()) if isinstance(libs, dict) else ""
    lines.append(f"- **crdask** {ver}" + (f" ({libtxt})" if libtxt else ""))
    wf = record.get("workflow") or {}
    if isinstance(wf, dict):
        w = f"- **workflow**: {_code(wf.get('path'), table=False)}"
        if wf.get("hash"):
            w += f", hash `{_one_line(wf['hash'])}`"
        lines.append(w)
    lines.append(f"- **started** {_cell(record.get('started'))}, **finished** "
                 f"{_cell(record.get('finished'))}, **took** {_duration(record.get('seconds'))}")
    sch = record.get("scheduler") or {}
    if isinstance(sch, dict) and sch:
        parts = [_cell(sch.get("kind"))]
        for key, unit in (("workers", "worker"), ("threads_per_worker", "thread")):
            n = sch.get(key)
            if n is not None:
                parts.append(f"{_int(n)} {unit}{'' if n == 1 else 's'}"
                             + (" per worker" if unit == "thread" else ""))
        slots = sch.get("task_slots")
        if slots and slots != sch.get("workers"):   # a threaded worker: frames at once
            parts.append(f"{_int(slots)} frames at a time")
        s = "- **scheduler**: " + ", ".join(parts)
        if sch.get("dashboard"):
            s += f"; dashboard {_one_line(sch['dashboard'])}"
        lines.append(s)
    return lines


def _summary(frames, failures):
    counts = {}
    for fr in frames:
        st = fr.get("status") or "unknown"
        counts[st] = counts.get(st, 0) + 1
    order = [s for s in _STATUS_ORDER if s in counts] + sorted(
        s for s in counts if s not in _STATUS_ORDER)
    parts = [f"{counts[s]} {s}" for s in order]
    n_sci = sum(1 for fr in frames if fr.get("type") == "science")
    cr = [fr.get("cr_pixels") for fr in frames
          if fr.get("type") == "science" and isinstance(fr.get("cr_pixels"), (int, float))
          and not isinstance(fr.get("cr_pixels"), bool)]
    lines = ["## Summary", ""]
    lines.append(f"{len(frames)} input frames ({n_sci} science): "
                 + (", ".join(parts) if parts else "none") + ".")
    if cr:
        lines.append(f"{_int(sum(cr))} CR pixels found in {len(cr)} science frames.")
    n_bad = len(failures)
    if n_bad:
        lines.append(f"**{n_bad} file(s) need attention** -- see "
                     "[Set aside / failures](#set-aside--failures).")
    else:
        lines.append("No frame was set aside.")
    return lines


def _masters(record):
    masters = record.get("masters") or {}
    lines = ["## Masters", ""]
    if not masters:
        return lines + ["No calibration masters.", ""]
    rows = []
    for name, m in masters.items():
        m = m if isinstance(m, dict) else {}
        inputs = m.get("inputs")
        n = len(inputs) if isinstance(inputs, (list, tuple)) else _MISSING
        rows.append([_cell(name), _code(m.get("path")), str(n), _cell(m.get("status"))])
    lines += _table(["master", "file", "inputs", "status"], rows)
    lines.append("")
    return lines


def _science(frames):
    sci = [fr for fr in frames if fr.get("type") == "science"]
    lines = ["## Science frames", ""]
    if not sci:
        return lines + ["No science frames.", ""]
    truth = any(fr.get("recall") is not None or fr.get("false_positives") is not None
                for fr in sci)
    header = ["file", "group", "status", "CR pixels", "seconds"]
    if truth:
        header += ["recall", "false positives"]
    header.append("output")
    rows = []
    for fr in sci:
        r = [_code(fr.get("file")), _cell(fr.get("group")), _cell(fr.get("status")),
             _int(fr.get("cr_pixels")), _num(fr.get("seconds"), "{:.1f}")]
        if truth:
            r += [_num(fr.get("recall"), "{:.3f}"), _int(fr.get("false_positives"))]
        r.append(_code(fr.get("output")))
        rows.append(r)
    return lines + _table(header, rows) + [""]


def _calibration(frames):
    other = [fr for fr in frames if fr.get("type") != "science"]
    if not other:
        return []
    rows = [[_code(fr.get("file")), _cell(fr.get("type")), _cell(fr.get("group")),
             _cell(fr.get("status")), _cell(fr.get("stage")), _num(fr.get("seconds"), "{:.1f}")]
            for fr in other]
    return (["## Calibration and other frames", ""]
            + _table(["file", "type", "group", "status", "stage", "seconds"], rows) + [""])


def _failures(record, frames):
    """``[(file, reason)]``: the record's failures, plus any bad frame not in them."""
    out, seen = [], set()
    for f in record.get("failures") or []:
        f = f if isinstance(f, dict) else {"file": f}
        name = f.get("file")
        out.append((name, f.get("reason")))
        seen.add(name)
    for fr in frames:
        if fr.get("status") in _BAD_STATUS and fr.get("file") not in seen:
            out.append((fr.get("file"), fr.get("error")))
            seen.add(fr.get("file"))
    return out


def _failure_lines(failures, frames):
    lines = ["## Set aside / failures", ""]
    if not failures:
        return lines + ["None: every frame was reduced or reused.", ""]
    status = {fr.get("file"): fr for fr in frames}
    for name, reason in failures:
        fr = status.get(name) or {}
        what = fr.get("status")
        stage = fr.get("stage")
        tag = ", ".join(str(x) for x in (what, f"at {stage}" if stage else None) if x)
        lines.append(f"- {_code(name, table=False)}" + (f" ({tag})" if tag else "") + ": "
                     + (_one_line(reason) if reason else "no reason recorded"))
    return lines + [""]


def _quality(record):
    cs = record.get("cr_summary")
    if not isinstance(cs, dict):
        return []
    lines = ["## CR detection quality (vs simulated truth)", ""]
    rec, fp = cs.get("recall"), cs.get("false_positives")
    n_true, n_found = cs.get("n_true"), cs.get("n_found")
    rec_txt = _num(rec, "{:.3f}")
    if isinstance(rec, (int, float)) and math.isfinite(rec):
        rec_txt += f" ({rec * 100:.1f} % of the true CR pixels found)"
    lines.append(f"- **recall**: {rec_txt}")
    fp_txt = _int(fp)
    try:
        if n_found:
            fp_txt += f" of {_int(n_found)} flagged pixels ({fp / n_found * 100:.1f} %)"
    except TypeError:
        pass
    lines.append(f"- **false positives**: {fp_txt}")
    lines.append(f"- **true CR pixels**: {_int(n_true)}; **flagged pixels**: {_int(n_found)}")
    for k, v in cs.items():
        if k not in ("recall", "false_positives", "n_true", "n_found"):
            lines.append(f"- {_cell(k)}: {_num(v, '{:.4g}') if isinstance(v, float) else _cell(v)}")
    return lines + [""]


QA_PNG = "qa_completeness.png"


def _qa_frames(frames):
    return [fr for fr in frames if isinstance(fr.get("qa"), dict)]


def _qa_lines(record, frames):
    measured = _qa_frames(frames)
    if not measured:
        return []
    bins = measured[0]["qa"].get("bins") or []
    labels = [f"{a:g}-{b:g}" for a, b in zip(bins, bins[1:])]
    lines = ["## CR completeness (injection-recovery)", "",
             "Synthetic CRs injected into a copy of each calibrated frame and found "
             "again with the same method and parameters (the outputs are not touched). "
             "Recall of events per injected peak S/N bin (sigma); extra false pixels: "
             "flagged after injection, not before, not touched by injected charge.", ""]
    rows = []
    for fr in measured:
        q = fr["qa"]
        rows.append([_code(fr.get("file")), _int(q.get("n_injected"))]
                    + [_num(r, "{:.2f}") for r in q.get("recall") or []]
                    + [_num((q.get("recall_above") or {}).get("10"), "{:.3f}"),
                       _int(q.get("extra_false_pixels"))])
    lines += _table(["file", "injected", *[f"S/N {lab}" for lab in labels],
                     "recall S/N>=10", "extra false px"], rows) + [""]
    png = (record.get("qa") or {}).get("completeness_png")
    if png:
        lines += [f"![CR completeness]({_link(png)})", ""]
    return lines


def _write_qa_png(out_dir, record, frames):
    """The completeness curve of the measured frames (``record['qa']`` names it)."""
    from .qa import plot_completeness
    if not (record.get("qa") or {}).get("completeness_png"):
        return None
    try:
        return plot_completeness([fr["qa"] for fr in _qa_frames(frames)],
                                 os.path.join(out_dir, QA_PNG))
    except Exception as e:  # the report is never refused: say why instead
        record["qa"]["completeness_png_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        return None


def _preview_lines(items, requested, out_dir):
    if items is None:   # no matplotlib
        return ["## Previews", "", PLOT_EXTRA_HINT + ".", ""]
    if not requested:
        return []
    lines = ["## Previews", ""]
    titles = {"master": "### Masters", "science":
              "### Science frames (before: CR mask in red; after cleaning)",
              "cr_counts": "### CR pixels over the night"}
    for kind in ("master", "science", "cr_counts"):
        its = [it for it in items if it["kind"] == kind]
        if not its:
            continue
        lines += [titles[kind], ""]
        for it in its:
            label = _one_line(it["name"]).replace("[", "(").replace("]", ")")
            if it["path"]:
                rel = _rel(it["path"], out_dir)
                if kind != "cr_counts":
                    lines.append(f"**{label}**" if kind == "master" else f"`{label}`")
                    lines.append("")
                lines += [f"![{label}]({_link(rel)})", ""]
            else:
                lines += [f"- {label}: preview not made ({it['error']})", ""]
    if not items:
        lines += ["No previews requested.", ""]
    return lines


def render_markdown(record, *, preview_items=(), out_dir=".", previews_requested=True):
    """The text of ``report.md`` for ``record``.

    ``preview_items`` are the items made by :mod:`.previews` (``None`` means
    matplotlib is missing); image links are relative to ``out_dir``.
    """
    frames = [fr if isinstance(fr, dict) else {"file": fr} for fr in record.get("frames") or []]
    failures = _failures(record, frames)
    lines = _header(record) + [""]
    lines += _summary(frames, failures) + [""]
    lines += _masters(record)
    lines += _science(frames)
    lines += _calibration(frames)
    lines += _failure_lines(failures, frames)
    lines += _quality(record)
    lines += _qa_lines(record, frames)
    lines += _preview_lines(preview_items, previews_requested, out_dir)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- driver

def _write_text(path, text):
    with atomic_open(path, overwrite=True, mode="wb") as f:
        f.write(text.encode("utf-8"))


def write_report(out_dir, record, *, previews=None, preview_items=None, live=False):
    """Write the run report into ``out_dir``; return the paths written.

    Writes ``report.json`` (the record), the preview PNGs in
    ``out_dir/previews/`` (when ``previews`` is given and matplotlib is
    installed; see :func:`crdask.pipeline.previews.make_previews` for its
    layout) and ``report.md``, each atomically, replacing an earlier report.

    ``live=True``: the previews were drawn while the night ran and
    ``preview_items`` are their ``render`` items (:mod:`crdask.pipeline.previews`;
    None without matplotlib); ``previews`` is then not drawn again.

    Returns ``{"json": path, "md": path, "previews": [png paths]}``.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "report.json")
    md_path = os.path.join(out_dir, "report.md")
    frames = [fr for fr in record.get("frames") or [] if isinstance(fr, dict)]
    if _qa_frames(frames):
        import importlib.util
        record["qa"] = {"frames": len(_qa_frames(frames)), "completeness_png":
                        QA_PNG if importlib.util.find_spec("matplotlib") else None}
    _write_text(json_path, record_to_json(record))   # first: the record is never lost
    qa_png = _write_qa_png(out_dir, record, frames)
    items = preview_items if live \
        else render_previews(out_dir, previews or {})   # None: no matplotlib
    _write_text(md_path, render_markdown(record, preview_items=items, out_dir=out_dir,
                                         previews_requested=bool(previews) or live))
    return {"json": json_path, "md": md_path,
            "previews": [it["path"] for it in items or [] if it["path"]]
            + ([qa_png] if qa_png else [])}
