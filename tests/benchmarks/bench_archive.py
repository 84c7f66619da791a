"""Archive mode benchmark: many simulated nights through ``crdask archive``.

    python tests/benchmarks/bench_archive.py            # 30 nights x 40 frames of 512^2
    python tests/benchmarks/bench_archive.py --quick    # 6 nights x 6 frames of 256^2

Measures, each ``crdask archive`` in its own process (the client) with its
own LocalCluster:

1. total time of the archive (N nights) and the per-frame scheduling
   overhead, two ways: ``(wall x task slots - sum of the frame tasks' own
   seconds) / frames`` -- every slot-second that is not a frame task
   (planning, masters, reports, idle slots, scheduling), spread over the
   frames -- and ``wall x slots / frames - median frame task`` (goal <= 50
   ms); the task seconds are the ledger's, measured inside the tasks. The
   first is also split into the one-off start (to the first task), the
   steady state (idle slot-seconds between the first and the last task) and
   the tail (last task to the end, cluster close included);
2. the client's peak memory (``ru_maxrss`` of the archive process; workers
   are separate processes) once N/3 nights are finished vs at the end of the
   same run (or, ``--separate-memory-run``, N/3 nights in a run of their
   own): flat within 10%;
3. a rerun after the archive is SIGKILLed in the middle reduces only the
   nights that were not finished (``--kill-nights K``: on the first K);
4. the anchor: the same first nights reduced by a shell-style loop of one
   ``crdask run`` per night (what a user does without archive mode),
   alternated with the archive on the same nights, same warm-up.

Prints readable lines and one ``JSON`` line.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _benchcommon import emit_json, machine, print_machine  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
CALIBS = dict(n_bias=3, dark_times=(60,), n_dark=2, filters=("V",), n_flat=3)

# Run as a child: one archive; print the client's peak RSS once a third of
# the nights are finished and at the end (ru_maxrss is the peak so far).
# Also, to tell a creep from transient peaks: the resident size after each
# night and the highest resident size seen (sampled every 50 ms) since the
# night before.
CHILD = """
import json, resource, sys, threading, time
from crdask.pipeline.archive import run_archive
third, done, at_third, trend = int(sys.argv[7]), [0], [None], []
rss_now, window, windows = [], [0], []
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
def sample():
    while True:
        window[0] = max(window[0], rss())
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
def log(line):
    if line.startswith("[") and " reduced, " in line and " set aside, in " in line:
        done[0] += 1
        trend.append(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        rss_now.append(round(rss()))
        windows.append(round(window[0]))
        window[0] = 0
        if done[0] == third:
            at_third[0] = trend[-1]
t, t_epoch = time.perf_counter(), time.time()
r = run_archive(sys.argv[1], sys.argv[2], output=sys.argv[3], nights=sys.argv[4] or None,
                max_nights_in_flight=int(sys.argv[5]), log=log,
                connect_kw={"workers": int(sys.argv[6]), "threads_per_worker": 1})
print("RESULT " + json.dumps({"wall": time.perf_counter() - t, "exit": r.exit_code,
      "t_start": t_epoch,
      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "maxrss_third_mib": at_third[0], "nights_done": done[0], "maxrss_by_night": trend,
      "rss_by_night": rss_now, "peak_rss_by_night": windows,
      "summary": {k: v for k, v in r.summary.items() if k != "nights"}}))
"""


def simulate(root, n_nights, n_frames, size):
    from crdask.simulate import write_night

    names = [f"2026{m:02d}{d:02d}" for m in range(1, 13) for d in range(1, 29)][:n_nights]
    for i, name in enumerate(names):
        if not (root / name).is_dir():
            write_night(root / name, shape=(size, size), n_science=n_frames, seed=100 + i,
                        **CALIBS)
    return names


def archive_child(root, tpl, out, nights, in_flight, workers, third=0):
    res = subprocess.run([sys.executable, "-c", CHILD, str(root), str(tpl), str(out),
                          nights or "", str(in_flight), str(workers), str(third)], env=ENV,
                         capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode != 0 or not lines:
        raise SystemExit(f"archive failed:\n{res.stdout}\n{res.stderr}")
    return json.loads(lines[-1][7:])


def task_seconds(out, names):
    """(sum, count, median) of the done frame tasks' own seconds (ledger)."""
    total, n, each = 0.0, 0, []
    for name in names:
        for p in (out / name / "ledger").glob("*.json"):
            if p.stem == "masters" or p.name.startswith("."):
                continue
            e = json.loads(p.read_text())
            if e.get("status") == "done":
                each.append(float(e.get("seconds") or 0.0))
                total += each[-1]
                n += 1
    each.sort()
    return total, n, each[len(each) // 2] if each else 0.0


def overhead_split(out, names, t_start, wall, slots):
    """The overhead in ms per frame split in three, from the ledgers' task
    start times and seconds: ``start`` (archive start to the first task:
    listing, cluster start, first catalogue and masters, worker imports),
    ``steady`` (slot-seconds without a frame task between the first task's
    start and the last task's end) and ``tail`` (last task's end to the
    archive's return: last report, summary, cluster close); they add up to
    the first definition."""
    from datetime import datetime

    spans = []
    for name in names:
        for p in (out / name / "ledger").glob("*.json"):
            if p.stem == "masters" or p.name.startswith("."):
                continue
            e = json.loads(p.read_text())
            if e.get("status") == "done" and e.get("started"):
                t0 = datetime.fromisoformat(e["started"]).timestamp()
                spans.append((t0, t0 + float(e.get("seconds") or 0.0)))
    if not spans:
        return None
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    busy = sum(b - a for a, b in spans)
    n = len(spans)
    return {"start_ms": 1000 * (first - t_start) * slots / n,
            "steady_ms": 1000 * ((last - first) * slots - busy) / n,
            "tail_ms": 1000 * (t_start + wall - last) * slots / n,
            "first_task_s": first - t_start, "tail_s": t_start + wall - last}


def loop_of_runs(root, names, out, workers):
    """The anchor: one ``crdask run`` per night, one after the other."""
    t = time.perf_counter()
    for name in names:
        wf = out / f"{name}.yaml"
        wf.parent.mkdir(parents=True, exist_ok=True)
        wf.write_text(yaml.safe_dump({"version": 1, "inputs": {"directory": str(root / name)},
                                      "output": str(out / name)}))
        res = subprocess.run([sys.executable, "-m", "crdask", "run", str(wf), "--workers",
                              str(workers), "--threads-per-worker", "1"], env=ENV,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"crdask run failed:\n{res.stdout}\n{res.stderr}")
    return time.perf_counter() - t


def kill_and_rerun(root, tpl, out, names, in_flight, workers):
    """SIGKILL the archive once about half the nights are finished; rerun."""
    cmd = [sys.executable, "-m", "crdask", "archive", str(root), "--workflow", str(tpl),
           "--output", str(out), "--max-nights-in-flight", str(in_flight), "--workers",
           str(workers), "--threads-per-worker", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    state = out / "archive"
    while proc.poll() is None:
        done = len(list(state.glob("*.json"))) if state.is_dir() else 0
        if done >= len(names) // 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in state.glob("*.json"))
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    s = json.loads((out / "archive-summary.json").read_text())
    redone = sorted(n["night"] for n in s["nights"] if n["status"] == "done")
    skipped = sorted(n["night"] for n in s["nights"] if n["status"] == "skipped")
    return {"finished_before_kill": len(finished), "rerun_reduced": len(redone),
            "rerun_skipped": len(skipped), "rerun_exit": res.returncode,
            "only_missing": skipped == finished and sorted(redone + skipped) == names}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nights", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--in-flight", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--anchor-nights", type=int, default=3)
    ap.add_argument("--kill-nights", type=int, default=None,
                    help="nights in the kill-and-rerun archive [default: all]")
    ap.add_argument("--separate-memory-run", action="store_true",
                    help="measure N/3 nights in a run of their own (default: the peak RSS "
                         "of the full run once N/3 nights are finished)")
    ap.add_argument("--keep", default=None, help="keep the simulated nights in this folder")
    a = ap.parse_args()
    n_nights = a.nights or (6 if a.quick else 30)
    n_frames = a.frames or (6 if a.quick else 40)
    size = a.size or (256 if a.quick else 512)
    info = machine()
    print_machine(info)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} (shared machine)", flush=True)

    work = Path(a.keep or tempfile.mkdtemp(prefix="bench_archive_"))
    root = work / "raw"
    t = time.perf_counter()
    names = simulate(root, n_nights, n_frames, size)
    print(f"simulated {n_nights} nights x {n_frames} frames of {size}^2 in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    tpl = work / "template.yaml"
    tpl.write_text(yaml.safe_dump({"version": 1, "inputs": {"directory": str(root / names[0])},
                                   "output": str(work / "unused")}))
    slots = a.workers

    def fresh(name):
        d = work / name
        shutil.rmtree(d, ignore_errors=True)
        return d

    # 1. the full archive (total time, overhead; client peak RSS once N/3
    # nights are finished and at the end of the same run)
    third = max(1, n_nights // 3)
    big_out = fresh("full")
    big = archive_child(root, tpl, big_out, None, a.in_flight, a.workers, third)
    secs, nframes, single = task_seconds(big_out, names)
    overhead_ms = 1000 * (big["wall"] * slots - secs) / max(nframes, 1)
    # the second definition: wall per frame (with `slots` frames at a time)
    # minus the median frame task's own time
    overhead2_ms = 1000 * (big["wall"] * slots / max(nframes, 1) - single)
    print(f"{n_nights} nights, {nframes} frames: {big['wall']:.1f} s total; frame tasks "
          f"{secs:.1f} s (median {single:.3f} s); overhead (wall x {slots} - tasks) / frames "
          f"= {overhead_ms:.0f} ms per frame; wall x {slots} / frames - median task = "
          f"{overhead2_ms:.0f} ms (goal <= 50); load {os.getloadavg()[0]:.2f}", flush=True)
    split = overhead_split(big_out, names, big["t_start"], big["wall"], slots)
    print(f"overhead split: start {split['start_ms']:.0f} ms (first task after "
          f"{split['first_task_s']:.1f} s) + steady {split['steady_ms']:.0f} ms + tail "
          f"{split['tail_ms']:.0f} ms ({split['tail_s']:.1f} s after the last task) per frame",
          flush=True)
    small = {"maxrss_mib": big["maxrss_third_mib"]}
    if a.separate_memory_run:     # N/3 nights in a process of their own
        small = archive_child(root, tpl, fresh("mem_small"),
                              f"{names[0]}..{names[third - 1]}", a.in_flight, a.workers)
    mem_ratio = big["maxrss_mib"] / small["maxrss_mib"]
    print(f"client peak memory: {third} nights {small['maxrss_mib']:.0f} MiB, {n_nights} nights "
          f"{big['maxrss_mib']:.0f} MiB -> {mem_ratio:.3f} (goal <= 1.10; "
          f"{'separate runs' if a.separate_memory_run else 'same run'}); "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"client peak RSS after each night (MiB): {big['maxrss_by_night']}", flush=True)
    print(f"client RSS after each night (MiB): {big['rss_by_night']}", flush=True)
    print(f"client highest RSS during each night (MiB): {big['peak_rss_by_night']}", flush=True)

    # 2. SIGKILL in the middle, rerun
    kn = names[:a.kill_nights or n_nights]
    kroot = root
    if len(kn) < n_nights:        # a sub-archive of the first nights (links, no copies)
        kroot = work / "raw_kill"
        kroot.mkdir(exist_ok=True)
        for name in kn:
            if not (kroot / name).exists():
                (kroot / name).symlink_to(root / name, target_is_directory=True)
    kr = kill_and_rerun(kroot, tpl, fresh("killed"), kn, a.in_flight, a.workers)
    print(f"kill in the middle: {kr['finished_before_kill']} nights finished before the kill; "
          f"rerun reduced {kr['rerun_reduced']}, skipped {kr['rerun_skipped']} "
          f"(only the missing ones: {kr['only_missing']}); load {os.getloadavg()[0]:.2f}",
          flush=True)

    # 3. the anchor: archive vs a loop of crdask run on the first nights,
    # alternating, after one warm-up each (--anchor-nights 0 skips it)
    k = min(a.anchor_nights, n_nights)
    t_arch, t_loop, ratio = [], [], None
    if k:
        sel = f"{names[0]}..{names[k - 1]}"
        archive_child(root, tpl, fresh("warm"), names[0], a.in_flight, a.workers)
        loop_of_runs(root, names[:1], fresh("warm_loop"), a.workers)
        for _ in range(2):
            t_arch.append(archive_child(root, tpl, fresh("cmp_a"), sel, a.in_flight,
                                        a.workers)["wall"])
            t_loop.append(loop_of_runs(root, names[:k], fresh("cmp_l"), a.workers))
        ratio = min(t_loop) / min(t_arch)
        print(f"{k} nights: archive {min(t_arch):.1f} s vs loop of crdask run "
              f"{min(t_loop):.1f} s -> {ratio:.2f}x", flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f}", flush=True)
    emit_json({"bench": "archive", "nights": n_nights, "frames_per_night": n_frames,
               "size": size, "workers": a.workers, "in_flight": a.in_flight,
               "total_s": big["wall"], "frames": nframes, "task_s": secs,
               "overhead_ms_per_frame": overhead_ms,
               "overhead2_ms_per_frame": overhead2_ms, "median_task_s": single,
               "overhead_split": split,
               "client_maxrss_mib": {str(third): small["maxrss_mib"],
                                     str(n_nights): big["maxrss_mib"]},
               "memory_ratio": mem_ratio, "maxrss_by_night": big["maxrss_by_night"],
               "rss_by_night": big["rss_by_night"],
               "peak_rss_by_night": big["peak_rss_by_night"],
               "anchor_nights": k,
               "archive_s": min(t_arch) if t_arch else None,
               "loop_s": min(t_loop) if t_loop else None, "ratio_loop_over_archive": ratio,
               "kill_rerun": kr,
               "load": [load_before[0], load_after[0]], "machine": info})
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    main()
