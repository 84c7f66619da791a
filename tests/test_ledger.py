"""The run ledger: atomic per-frame entries, resume logic, the checksum cache."""

import hashlib
import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from crdask.io.atomic import atomic_open, temp_name_for
from crdask.io import checksums
from crdask.pipeline import ledger as ledger_mod
from crdask.pipeline.ledger import STAGES, Ledger, file_sha256

SHA = "a" * 64
CFG = "cfg1"


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "out")


def test_stages_constant():
    assert STAGES == ("calibrated", "cleaned", "written")


def test_round_trip(ledger, tmp_path):
    assert ledger.get("r1") is None
    e = ledger.start("r1", tmp_path / "raw" / "r1.fits", SHA, CFG, night="2024-03-15")
    assert os.path.isfile(tmp_path / "out" / "ledger" / "r1.json")
    assert e == ledger.get("r1")
    assert e["name"] == "r1" and e["input"] == str(tmp_path / "raw" / "r1.fits")
    assert (e["input_sha256"], e["config_hash"]) == (SHA, CFG)
    assert e["crdask_version"] == ledger_mod.__version__
    assert (e["stage"], e["status"], e["error"], e["attempts"]) == (None, "running", None, 1)
    assert e["info"] == {"night": "2024-03-15"}
    assert e["started"] == e["updated"] and e["seconds"] == 0.0

    time.sleep(0.01)
    e = ledger.advance("r1", "calibrated", sky=1234.5)
    assert e["stage"] == "calibrated" and e["status"] == "running"
    assert e["seconds"] > 0 and e["updated"] > e["started"]
    e = ledger.advance("r1", "cleaned", ncr=17)
    e = ledger.finish("r1", output="out/r1.fits")
    assert (e["stage"], e["status"], e["error"]) == ("written", "done", None)
    assert e["info"] == {"night": "2024-03-15", "sky": 1234.5, "ncr": 17,
                         "output": "out/r1.fits"}
    assert ledger.get("r1") == e
    for key in ("name", "input", "input_sha256", "config_hash", "crdask_version", "stage",
                "status", "error", "started", "updated", "seconds", "attempts", "info"):
        assert key in e
    with open(tmp_path / "out" / "ledger" / "r1.json") as fh:
        assert json.load(fh) == e


def test_attempts_and_fail(ledger):
    ledger.start("r1", "r1.fits", SHA, CFG)
    try:
        raise ValueError("r1.fits[0]: keyword EXPTIME missing\nsecond line")
    except ValueError as err:
        e = ledger.fail("r1", err)
    assert e["status"] == "failed"
    assert e["error"] == "ValueError: r1.fits[0]: keyword EXPTIME missing"
    e = ledger.start("r1", "r1.fits", SHA, CFG)
    assert e["attempts"] == 2 and e["status"] == "running" and e["error"] is None
    e = ledger.fail("r1", "x" * 2000)
    assert len(e["error"]) <= 500 and "\n" not in e["error"]
    e = ledger.fail("never-started", "cannot read file")
    assert e["status"] == "failed" and e["attempts"] == 1 and e["stage"] is None


def test_bad_calls(ledger):
    with pytest.raises(KeyError, match="start"):
        ledger.advance("nobody", "calibrated")
    with pytest.raises(KeyError):
        ledger.finish("nobody")
    ledger.start("r1", "r1.fits", SHA, CFG)
    with pytest.raises(ValueError, match="calibrated, cleaned, written"):
        ledger.advance("r1", "reduced")
    with pytest.raises(ValueError):
        ledger.is_current("r1", SHA, CFG, stage="reduced")
    for bad in ("", ".x", "a/b", "a\\b"):
        with pytest.raises(ValueError):
            ledger.start(bad, "x", SHA, CFG)


def test_entries_and_reset(ledger, tmp_path):
    for n in ("c", "a", "b"):
        ledger.start(n, f"{n}.fits", SHA, CFG)
    ledger.finish("b")
    raw = tmp_path / "in.fits"
    raw.write_bytes(b"x" * 100)
    os.utime(raw, ns=(0, 10**18))
    ledger.file_sha256(raw)                                   # fills the cache
    # a leftover of a killed writer
    open(temp_name_for(os.path.join(ledger.path, "a.json")), "w").close()
    assert [e["name"] for e in ledger.entries()] == ["a", "b", "c"]
    assert ledger.reset() == 3
    assert ledger.entries() == [] and ledger.get("b") is None
    assert os.listdir(ledger.path) == ["sha256"]              # the cache survives
    assert len(os.listdir(os.path.join(ledger.path, "sha256"))) == 1


# ------------------------------------------------------------------ is_current
def test_is_current_logic(ledger, monkeypatch):
    assert not ledger.is_current("r1", SHA, CFG)
    ledger.start("r1", "r1.fits", SHA, CFG)
    assert not ledger.is_current("r1", SHA, CFG)
    assert not ledger.is_current("r1", SHA, CFG, stage="calibrated")
    ledger.advance("r1", "calibrated")
    assert ledger.is_current("r1", SHA, CFG, stage="calibrated")
    assert not ledger.is_current("r1", SHA, CFG, stage="cleaned")
    assert not ledger.is_current("r1", SHA, CFG)               # not written yet
    ledger.fail("r1", "CR step blew up")
    assert ledger.is_current("r1", SHA, CFG, stage="calibrated")   # still valid
    assert not ledger.is_current("r1", SHA, CFG)
    ledger.start("r1", "r1.fits", SHA, CFG)
    ledger.finish("r1")
    for stage in STAGES:
        assert ledger.is_current("r1", SHA, CFG, stage=stage)
    assert ledger.is_current("r1", SHA, CFG)
    # anything changed -> redo
    assert not ledger.is_current("r1", "b" * 64, CFG)          # input changed
    assert not ledger.is_current("r1", SHA, "cfg2")            # config changed
    assert not ledger.is_current("r1", None, CFG)
    monkeypatch.setattr(ledger_mod, "__version__", "99.0")     # crdask upgraded
    assert not ledger.is_current("r1", SHA, CFG)
    assert not ledger.is_current("r1", SHA, CFG, stage="calibrated")


def test_written_but_failed_afterwards_is_not_current(ledger):
    ledger.start("r1", "r1.fits", SHA, CFG)
    ledger.advance("r1", "written")
    assert not ledger.is_current("r1", SHA, CFG)               # status not 'done'
    ledger.finish("r1")
    assert ledger.is_current("r1", SHA, CFG)


def test_start_keeps_progress_only_if_unchanged(ledger, monkeypatch):
    ledger.start("r1", "r1.fits", SHA, CFG)
    ledger.advance("r1", "cleaned", ncr=3)
    e = ledger.start("r1", "r1.fits", SHA, CFG)                 # rerun after a kill
    assert e["stage"] == "cleaned" and e["info"] == {"ncr": 3} and e["attempts"] == 2
    e = ledger.start("r1", "r1.fits", SHA, "cfg2")              # config changed
    assert e["stage"] is None and e["info"] == {} and e["attempts"] == 3
    ledger.advance("r1", "calibrated")
    monkeypatch.setattr(ledger_mod, "__version__", "99.0")
    e = ledger.start("r1", "r1.fits", SHA, "cfg2")
    assert e["stage"] is None and e["crdask_version"] == "99.0"


# ------------------------------------------------------------ kill simulations
def test_temp_file_without_rename_leaves_entry_unchanged(ledger):
    before = ledger.start("r1", "r1.fits", SHA, CFG)
    path = os.path.join(ledger.path, "r1.json")
    tmp = temp_name_for(path)
    with open(tmp, "w") as fh:                  # a writer killed before os.replace
        fh.write('{"name": "r1", "status": "do')
    assert ledger.get("r1") == before
    assert [e["name"] for e in ledger.entries()] == ["r1"]
    assert ledger.is_current("r1", SHA, CFG) is False
    ledger.finish("r1")
    assert ledger.get("r1")["status"] == "done"


def _sigkill_while_writing(out_dir):
    """Child: start an update of r1 and die half-way through writing it."""
    led = Ledger(out_dir)
    path = os.path.join(led.path, "r1.json")
    with atomic_open(path, overwrite=True, mode="w") as fh:
        fh.write('{"name": "r1", "stat')
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def test_sigkill_during_update_leaves_entry_intact(ledger):
    ledger.start("r1", "r1.fits", SHA, CFG)
    before = ledger.finish("r1")
    p = mp.get_context("spawn").Process(target=_sigkill_while_writing,
                                        args=(ledger.out_dir,))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    assert ledger.get("r1") == before
    assert ledger.is_current("r1", SHA, CFG)
    assert [e["name"] for e in ledger.entries()] == ["r1"]
    assert ledger.reset() == 1
    assert os.listdir(ledger.path) == []                       # leftover .tmp removed


def test_unreadable_entry_counts_as_missing(ledger):
    os.makedirs(ledger.path)
    with open(os.path.join(ledger.path, "r1.json"), "w") as fh:
        fh.write("{not json")
    assert ledger.get("r1") is None
    assert not ledger.is_current("r1", SHA, CFG)
    assert ledger.start("r1", "r1.fits", SHA, CFG)["attempts"] == 1


# ---------------------------------------------------------- concurrent workers
def _worker(args):
    out_dir, names = args
    led = Ledger(out_dir)
    for n in names:
        for _ in range(2):                                       # a retry, too
            led.start(n, f"/raw/{n}.fits", SHA, CFG)
            for stage in STAGES[:-1]:
                led.advance(n, stage, worker=os.getpid())
        led.finish(n)
    return [led.is_current(n, SHA, CFG) for n in names]


def test_concurrent_workers_different_names(tmp_path):
    out = tmp_path / "out"
    names = [f"r{i:03d}" for i in range(24)]
    jobs = [(out, names[i::4]) for i in range(4)]
    with mp.get_context("spawn").Pool(3) as pool:
        results = pool.map(_worker, jobs, chunksize=1)
    assert all(all(r) for r in results)
    led = Ledger(out)
    entries = led.entries()
    assert [e["name"] for e in entries] == names
    assert all(e["status"] == "done" and e["attempts"] == 2 for e in entries)
    assert sorted(os.listdir(led.path)) == [f"{n}.json" for n in names]


# ------------------------------------------------------------- checksum cache
def _old(path):
    os.utime(path, ns=(10**18, 10**18 + 12345))                 # well in the past


def test_file_sha256_plain(tmp_path):
    p = tmp_path / "x.fits"
    p.write_bytes(os.urandom(3 * 2**20 + 7))
    assert file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_file_sha256_cache(ledger, tmp_path, monkeypatch):
    calls = []
    real = checksums.hash_file
    monkeypatch.setattr(checksums, "hash_file", lambda p: calls.append(p) or real(p))
    p = tmp_path / "raw.fits"
    p.write_bytes(b"A" * 5000)
    _old(p)
    want = hashlib.sha256(b"A" * 5000).hexdigest()
    assert ledger.file_sha256(p) == want and len(calls) == 1
    assert ledger.file_sha256(p) == want and len(calls) == 1     # cached
    assert Ledger(ledger.out_dir).file_sha256(str(p)) == want and len(calls) == 1
    link = tmp_path / "link.fits"
    link.symlink_to(p)
    assert ledger.file_sha256(link) == want and len(calls) == 1  # same real file

    # content changed in place, same size, new mtime -> re-hashed
    p.write_bytes(b"B" * 5000)
    os.utime(p, ns=(10**18, 10**18 + 99999))
    assert ledger.file_sha256(p) == hashlib.sha256(b"B" * 5000).hexdigest()
    assert len(calls) == 2

    # replaced by a copy that kept the old mtime (rsync -t): new inode -> re-hashed
    tmp = tmp_path / "new.fits"
    tmp.write_bytes(b"C" * 5000)
    os.utime(tmp, ns=(10**18, 10**18 + 99999))
    os.replace(tmp, p)
    assert ledger.file_sha256(p) == hashlib.sha256(b"C" * 5000).hexdigest()
    assert len(calls) == 3


def test_fresh_files_are_not_cached(ledger, tmp_path, monkeypatch):
    calls = []
    real = checksums.hash_file
    monkeypatch.setattr(checksums, "hash_file", lambda p: calls.append(p) or real(p))
    p = tmp_path / "being_written.fits"
    p.write_bytes(b"partial")                                     # mtime = now
    ledger.file_sha256(p)
    ledger.file_sha256(p)
    assert len(calls) == 2
    assert not os.path.exists(os.path.join(ledger.path, "sha256")) or \
        os.listdir(os.path.join(ledger.path, "sha256")) == []


def test_corrupt_cache_file_is_ignored(ledger, tmp_path):
    p = tmp_path / "raw.fits"
    p.write_bytes(b"data")
    _old(p)
    ledger.file_sha256(p)
    cache = os.path.join(ledger.path, "sha256")
    (fname,) = os.listdir(cache)
    with open(os.path.join(cache, fname), "w") as fh:
        fh.write("garbage")
    assert ledger.file_sha256(p) == hashlib.sha256(b"data").hexdigest()
    with pytest.raises(FileNotFoundError):
        ledger.file_sha256(tmp_path / "missing.fits")


# ------------------------------------------------- provenance: closure, outputs
def _closure(ledger, tmp_path, bias=b"bias-1"):
    raw, mb = tmp_path / "r1.fits", tmp_path / "master_bias.fits"
    if not raw.exists():
        raw.write_bytes(b"raw")
    mb.write_bytes(bias)
    return ledger.closure(raw=raw, masters={"bias": mb})


def test_lazy_creation_and_readonly(tmp_path):
    out = tmp_path / "out"
    led = Ledger(out)
    assert led.get("r1") is None and led.entries() == [] and led.reset() == 0
    assert not led.is_current("r1", SHA, CFG)
    assert not out.exists()                                   # nothing created yet
    ro = Ledger(out, readonly=True)
    raw = tmp_path / "raw.fits"
    raw.write_bytes(b"x")
    _old(raw)
    assert ro.file_sha256(raw) == hashlib.sha256(b"x").hexdigest()
    assert not out.exists()                                   # cache not written
    with pytest.raises(RuntimeError, match="read-only"):
        ro.start("r1", "r1.fits", SHA, CFG)
    assert not out.exists()
    led.start("r1", "r1.fits", SHA, CFG)
    assert os.path.isfile(out / "ledger" / "r1.json")


def test_closure_covers_masters(ledger, tmp_path):
    c1 = _closure(ledger, tmp_path)
    assert set(c1) == {"raw", "master:bias"}
    assert c1["master:bias"] == hashlib.sha256(b"bias-1").hexdigest()
    e = ledger.start("r1", tmp_path / "r1.fits", c1["raw"], CFG, inputs=c1)
    assert e["inputs"] == c1 and e["kind"] == "frame"
    ledger.finish("r1")
    assert ledger.is_current("r1", c1["raw"], CFG, inputs=c1)
    c2 = _closure(ledger, tmp_path, bias=b"bias-2 with +50 ADU")   # master rebuilt
    assert c2["raw"] == c1["raw"] and c2 != c1
    assert not ledger.is_current("r1", c2["raw"], CFG, inputs=c2)
    assert not ledger.is_current("r1", c1["raw"], CFG, inputs={"raw": c1["raw"]})
    e = ledger.start("r1", tmp_path / "r1.fits", c2["raw"], CFG, inputs=c2)
    assert e["stage"] is None                                  # progress cleared


def test_group_entry_covers_every_member(ledger, tmp_path):
    members = []
    for i in range(3):
        p = tmp_path / f"g{i}.fits"
        p.write_bytes(f"member {i}".encode())
        members.append(p)
    c = ledger.closure(members=members)
    assert sorted(c) == ["member:g0.fits", "member:g1.fits", "member:g2.fits"]
    e = ledger.start("group-1", None, None, CFG, kind="group", inputs=c)
    assert e["input_sha256"] == ledger_mod.closure_digest(c) and e["kind"] == "group"
    ledger.finish("group-1")
    assert ledger.is_current("group-1", None, CFG, inputs=c)
    assert not ledger.is_current("group-1", None, CFG, inputs=ledger.closure(members=members[:2]))
    members[1].write_bytes(b"member 1, edited")
    assert not ledger.is_current("group-1", None, CFG, inputs=ledger.closure(members=members))
    with pytest.raises(ValueError, match="frame, master, group"):
        ledger.start("x", None, SHA, CFG, kind="night")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "replace-same"])
def test_outputs_verified(ledger, tmp_path, damage):
    out = tmp_path / "r1_cal.fits"
    body = os.urandom(40000)
    out.write_bytes(body)
    ledger.start("r1", "r1.fits", SHA, CFG)
    e = ledger.finish("r1", outputs=[out], cr_pixels=3)
    rec = e["outputs"][str(out)]
    assert rec["size"] == 40000 and rec["sha256"] == hashlib.sha256(body).hexdigest()
    assert ledger.is_current("r1", SHA, CFG) and ledger.output_problems("r1") == []
    assert ledger.outputs("r1") == {str(out): rec["sha256"]}
    if damage == "truncate":
        out.write_bytes(body[:2880])
        want = ["size 2880, recorded 40000"]
    elif damage == "flip":                       # same size, new mtime: re-hashed
        b = bytearray(body)
        b[1234] ^= 0x10
        out.write_bytes(bytes(b))
        os.utime(out, ns=(rec["mtime_ns"] + 10**9, rec["mtime_ns"] + 10**9))
        want = ["SHA-256 differs"]
    elif damage == "delete":
        out.unlink()
        want = ["No such file"]
    else:                                        # same bytes, new inode: still intact
        tmp = tmp_path / "copy"
        tmp.write_bytes(body)
        os.replace(tmp, out)
        want = []
    problems = ledger.output_problems("r1")
    assert len(problems) == len(want)
    for p, w in zip(problems, want):
        assert p.startswith(str(out)) and w in p
    assert ledger.is_current("r1", SHA, CFG) == (not want)
    assert ledger.is_current("r1", SHA, CFG, stage="cleaned")   # earlier stages stand


def test_full_verify_catches_surgery_with_old_mtime(ledger, tmp_path):
    out = tmp_path / "o.fits"
    out.write_bytes(b"A" * 5000)
    ledger.start("r1", "r1.fits", SHA, CFG)
    rec = ledger.finish("r1", outputs=[out])["outputs"][str(out)]
    with open(out, "r+b") as fh:                 # in place: same inode and size
        fh.write(b"B")
    os.utime(out, ns=(rec["mtime_ns"], rec["mtime_ns"]))
    assert ledger.is_current("r1", SHA, CFG)                     # stat trusted (documented)
    assert not ledger.is_current("r1", SHA, CFG, verify="full")
    assert ledger.is_current("r1", SHA, CFG, verify="size")
    with pytest.raises(ValueError, match="stat, full, size"):
        ledger.is_current("r1", SHA, CFG, verify="sometimes")


def test_cleanup_removes_sha_cache_leftovers(ledger, tmp_path):
    raw = tmp_path / "raw.fits"
    raw.write_bytes(b"data")
    _old(raw)
    ledger.file_sha256(raw)
    cache = os.path.join(ledger.path, "sha256")
    left = [temp_name_for(os.path.join(cache, "abc.json")),
            temp_name_for(os.path.join(ledger.path, "r1.json"))]
    for p in left:
        open(p, "w").close()
    assert ledger.cleanup() == 2
    assert not any(os.path.exists(p) for p in left)
    assert len(os.listdir(cache)) == 1                           # the real cache entry stays
    open(left[0], "w").close()
    ledger.reset()
    assert not os.path.exists(left[0])


def test_recorded_outputs_are_not_hashed_again_as_inputs(ledger, tmp_path, monkeypatch):
    # a master just written and recorded by finish() is an input of every
    # science frame: its digest is reused by stat data, even while it is too
    # fresh for the disk cache; once it changes it is hashed again
    p = tmp_path / "master_bias.fits"
    p.write_bytes(b"master v1")                                   # mtime = now
    ledger.start("masters", None, None, "cfg")
    ledger.finish("masters", outputs=[p])
    calls = []
    real = checksums.hash_file
    monkeypatch.setattr(checksums, "hash_file", lambda q: calls.append(q) or real(q))
    for _ in range(3):
        assert ledger.closure(masters={"bias": p}) == \
            {"master:bias": hashlib.sha256(b"master v1").hexdigest()}
    assert calls == []
    p.write_bytes(b"master v2, longer")
    assert ledger.file_sha256(p) == hashlib.sha256(b"master v2, longer").hexdigest()
    assert len(calls) == 1
    assert Ledger(ledger.out_dir).file_sha256(p) == hashlib.sha256(
        b"master v2, longer").hexdigest()                         # a new run: no memo
