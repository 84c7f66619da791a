"""Zarr intermediates: round trips, completeness after kills, concurrent workers."""

import json
import multiprocessing as mp
import os
import pickle
import signal
import zlib

import numpy as np
import pytest
import zarr

from crdask.io import intermediates as im
from crdask.io.intermediates import IncompleteError, IntermediateStore


def _frame(seed=0, shape=(64, 80)):
    rng = np.random.default_rng(seed)
    sci = rng.normal(100.0, 5.0, shape).astype(np.float32)
    var = (np.abs(sci) + 4.0).astype(np.float32)
    mask = (rng.random(shape) < 0.05).astype(np.uint8) * 4
    return {"sci": sci, "var": var, "mask": mask}


@pytest.fixture
def store(tmp_path):
    return IntermediateStore(tmp_path / "intermediate.zarr")


def _assert_frame_equal(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert isinstance(got[k], np.ndarray)
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k])


# ----------------------------------------------------------------- round trips
def test_frame_round_trip(store):
    f = _frame()
    assert not store.has_frame("r001")
    store.write_frame("r001", attrs={"exptime": np.float32(300), "filter": "V"}, **f)
    assert store.has_frame("r001")
    assert store.has_frame("r001", keys=("sci", "var", "mask"))
    assert store.has_frame("r001", keys="sci")
    assert not store.has_frame("r001", keys=("sci", "flat"))
    _assert_frame_equal(store.read_frame("r001"), f)
    sub = store.read_frame("r001", keys=("mask",))
    assert list(sub) == ["mask"]
    assert store.frame_attrs("r001") == {"exptime": 300.0, "filter": "V"}
    assert store.frames() == ["r001"]
    with pytest.raises(IncompleteError):
        store.read_frame("r001", keys=("flat",))
    with pytest.raises(KeyError):           # IncompleteError is a KeyError
        store.read_frame("nope")


def test_overwrite_replaces_arrays_and_drops_stale_ones(store):
    store.write_frame("f", **_frame(0))
    new = {"sci": _frame(1)["sci"], "flag": _frame(1)["mask"].astype(bool)}
    store.write_frame("f", **new)
    _assert_frame_equal(store.read_frame("f"), new)
    assert not store.has_frame("f", keys=("var",))
    assert not os.path.exists(os.path.join(store.path, "frames", "f", "var"))


def test_master_round_trip(store):
    bias = np.random.default_rng(3).normal(0, 2, (50, 40)).astype(np.float32)
    assert not store.has_master("bias")
    store.write_master("bias", bias, attrs={"ncombine": 11})
    assert store.has_master("bias")
    got = store.read_master("bias")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, bias)
    assert store.master_attrs("bias") == {"ncombine": 11}
    assert store.masters() == ["bias"]
    assert store.frames() == []                   # separate namespaces
    store.write_master("bias", bias + 1)
    np.testing.assert_array_equal(store.read_master("bias"), bias + 1)
    assert store.delete_master("bias") and not store.has_master("bias")


def test_delete_frame(store):
    store.write_frame("a", **_frame())
    store.write_frame("b", **_frame(1))
    assert store.delete_frame("a") is True
    assert store.delete_frame("a") is False
    assert not store.has_frame("a")
    assert store.frames() == ["b"]
    assert not [n for n in os.listdir(os.path.join(store.path, "frames"))
                if n.startswith(".trash")]


def test_is_a_valid_zarr_v3_hierarchy(store, tmp_path):
    f = _frame()
    store.write_frame("r1", **f)
    store.write_master("flat_V", f["sci"])
    root = zarr.open_group(tmp_path / "intermediate.zarr", mode="r")
    assert root.metadata.zarr_format == 3
    assert root.attrs["crdask"] == "intermediates"
    np.testing.assert_array_equal(root["frames/r1/sci"][...], f["sci"])
    np.testing.assert_array_equal(root["masters/flat_V/data"][...], f["sci"])
    lazy = store.open_frame("r1")["var"]
    np.testing.assert_array_equal(lazy[10:20, 5:9], f["var"][10:20, 5:9])


def test_codecs_and_chunking(tmp_path):
    f = _frame(shape=(100, 64))
    s = IntermediateStore(tmp_path / "i.zarr")
    s.write_frame("whole", **f)
    z = s.open_frame("whole")
    assert z["sci"].chunks == (100, 64)            # small frame: one chunk
    assert z["sci"].compressors == ()              # floats: not compressed
    assert len(z["mask"].compressors) == 1         # masks: Blosc LZ4
    assert z["mask"].compressors[0].cname.value == "lz4"
    strips = IntermediateStore(tmp_path / "j.zarr", max_chunk_bytes=64 * 4 * 16,
                               compress_floats=True)
    strips.write_frame("strips", **f)
    z = strips.open_frame("strips")
    assert z["sci"].chunks == (16, 64)             # full-width strips
    assert len(z["sci"].compressors) == 1
    _assert_frame_equal(strips.read_frame("strips"), f)


def test_odd_shapes_and_dtypes(store):
    arrays = {"a": np.arange(7, dtype=np.int16), "b": np.zeros((0, 5), np.float64),
              "c": np.ones((3, 4, 2), bool), "d": np.arange(12.0).reshape(3, 4)[:, ::2]}
    store.write_frame("odd", **arrays)
    _assert_frame_equal(store.read_frame("odd"), {k: np.ascontiguousarray(v)
                                                   for k, v in arrays.items()})


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "a\\b", "__x", "zarr.json", "x" * 201])
def test_bad_names(store, bad):
    with pytest.raises(ValueError):
        store.write_frame(bad, sci=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        store.has_frame(bad)


def test_bad_arrays(store):
    with pytest.raises(ValueError, match="no arrays"):
        store.write_frame("x")
    with pytest.raises(ValueError, match="scalar"):
        store.write_frame("x", sci=np.float32(1))
    with pytest.raises(TypeError, match="dtype"):
        store.write_frame("x", sci=np.array(["a", "b"]))


def test_refuses_foreign_directory(tmp_path):
    d = tmp_path / "intermediate.zarr"
    d.mkdir()
    (d / "something.txt").write_text("not zarr")
    with pytest.raises(ValueError, match="not a crdask intermediate"):
        IntermediateStore(d)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    IntermediateStore(empty).write_frame("f", sci=np.zeros((2, 2), np.float32))


def test_reopen_existing_store(tmp_path):
    f = _frame()
    IntermediateStore(tmp_path / "i.zarr").write_frame("r1", **f)
    again = IntermediateStore(tmp_path / "i.zarr")
    _assert_frame_equal(again.read_frame("r1"), f)


def test_pickles_as_settings(store):
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path and clone.max_chunk_bytes == store.max_chunk_bytes


def test_fsync_option(tmp_path):
    s = IntermediateStore(tmp_path / "i.zarr", fsync=True)
    s.write_frame("f", **_frame())
    assert s.has_frame("f")


# ------------------------------------------------- completeness / interruption
def test_arrays_without_final_attribute_are_incomplete(store):
    """Simulate a kill after the arrays but before ``complete``: raw zarr writes."""
    node = os.path.join(store.path, "frames", "killed")
    g = zarr.create_group(node, zarr_format=3, attributes={"complete": False})
    for k, a in _frame().items():
        g.create_array(k, shape=a.shape, dtype=a.dtype)[...] = a
    assert not store.has_frame("killed")
    assert not store.has_frame("killed", keys=("sci",))
    with pytest.raises(IncompleteError):
        store.read_frame("killed")
    assert store.frames() == []
    assert store.frames(complete=False) == ["killed"]
    store.write_frame("killed", **_frame(2))           # the rerun redoes it
    _assert_frame_equal(store.read_frame("killed"), _frame(2))


def test_group_without_metadata_is_incomplete(store):
    os.makedirs(os.path.join(store.path, "frames", "bare", "sci"))
    assert not store.has_frame("bare")
    store.write_frame("bare", **_frame())
    assert store.has_frame("bare")


def test_interrupted_rewrite_clears_complete_first(store, monkeypatch):
    store.write_frame("f", **_frame(0))
    real = im._put_attrs

    async def fail_on_final(group, attrs):
        if attrs.get("complete"):
            raise RuntimeError("killed before the final attribute")
        await real(group, attrs)

    monkeypatch.setattr(im, "_put_attrs", fail_on_final)
    with pytest.raises(RuntimeError, match="killed"):
        store.write_frame("f", **_frame(1))
    assert not store.has_frame("f")        # not the old frame, not a mix
    monkeypatch.setattr(im, "_put_attrs", real)
    store.write_frame("f", **_frame(1))
    _assert_frame_equal(store.read_frame("f"), _frame(1))


def _write_then_sigkill(path, when):
    """Child: write a frame and SIGKILL ourselves at ``when``."""
    real = im._put_attrs

    async def put(group, attrs):
        if when == "before-complete" and attrs.get("complete"):
            os.kill(os.getpid(), signal.SIGKILL)
        await real(group, attrs)

    im._put_attrs = put
    if when == "mid-array":
        orig = im._write_arrays

        async def write_some(group, arrays, specs):
            await orig(group, {"sci": arrays["sci"]}, specs)   # one array lands
            os.kill(os.getpid(), signal.SIGKILL)

        im._write_arrays = write_some
    IntermediateStore(path).write_frame("f", **_frame(5))


@pytest.mark.parametrize("when", ["before-complete", "mid-array"])
def test_sigkill_mid_write_leaves_frame_incomplete(tmp_path, when):
    path = tmp_path / "i.zarr"
    store = IntermediateStore(path)
    store.write_frame("f", **_frame(0))                    # an older complete version
    p = mp.get_context("spawn").Process(target=_write_then_sigkill, args=(path, when))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    assert not store.has_frame("f")
    assert store.frames() == []
    store.write_frame("f", **_frame(5))
    _assert_frame_equal(store.read_frame("f"), _frame(5))


# ------------------------------------------------------------ worker processes
def _worker_write(args):
    path, name, seed = args
    store = IntermediateStore(path)                        # races to create the root
    f = _frame(seed, shape=(128, 96))
    for _ in range(3):                                     # overwrite, too
        store.write_frame(name, attrs={"seed": seed}, **f)
    store.write_master(f"m_{name}", f["sci"])
    return name, store.has_frame(name)


def _worker_read(args):
    store, name, seed = args                               # a pickled store
    got = store.read_frame(name)
    want = _frame(seed, shape=(128, 96))
    return all(np.array_equal(got[k], want[k]) for k in want)


def test_concurrent_workers_write_different_frames(tmp_path):
    path = tmp_path / "intermediate.zarr"                  # not created by the parent
    jobs = [(path, f"r{i:03d}", i) for i in range(12)]
    with mp.get_context("spawn").Pool(3) as pool:
        results = pool.map(_worker_write, jobs, chunksize=1)
        assert all(ok for _, ok in results)
        store = IntermediateStore(path)
        assert store.frames() == [name for _, name, _ in jobs]
        assert store.masters() == [f"m_{name}" for _, name, _ in jobs]
        assert pool.map(_worker_read, [(store, n, s) for _, n, s in jobs])
    for _, name, seed in jobs:
        _assert_frame_equal(store.read_frame(name), _frame(seed, shape=(128, 96)))
        assert store.frame_attrs(name) == {"seed": seed}
    with open(os.path.join(store.path, "zarr.json")) as fh:
        assert json.load(fh)["attributes"]["crdask"] == "intermediates"
    leftovers = [n for d, dirs, files in os.walk(path) for n in dirs + files
                 if n.startswith(".") or n.endswith(".partial")]
    assert leftovers == []
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_cleanup_removes_leftovers(store):
    store.write_frame("f", **_frame())
    trash = os.path.join(store.path, "frames", ".trash-g.abc")
    os.makedirs(os.path.join(trash, "sci"))
    partial = os.path.join(store.path, "frames", "f", "zarr.abc.partial")
    open(partial, "wb").close()
    assert store.cleanup() == 2
    assert not os.path.exists(trash) and not os.path.exists(partial)
    assert store.has_frame("f")


# ------------------------------------------------------------------ checksums
from hypothesis import given, settings, strategies as st  # noqa: E402

from crdask.io.intermediates import IntermediateDamaged, chunk_checksums  # noqa: E402


def _chunk_files(store, name, key):
    root = os.path.join(store.path, "frames", name, key, "c")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def _strip_store(tmp_path, sub="s"):
    # 4 KiB chunks: a 64x80 float32 array is 6 strips of 12 rows, a uint8 mask 51-row strips
    return IntermediateStore(tmp_path / sub / "intermediate.zarr", max_chunk_bytes=4096)


def test_checksums_recorded_with_the_data(tmp_path):
    store = _strip_store(tmp_path)
    f = _frame(3)
    store.write_frame("r42", **f)
    attrs = json.load(open(os.path.join(store.path, "frames", "r42", "zarr.json")))["attributes"]
    assert attrs["checksum"] == "crc32"
    assert sorted(attrs["chunks"]) == ["mask", "sci", "var"]
    sci_chunks = attrs["chunks"]["sci"]
    assert sorted(sci_chunks) == [f"{i}.0" for i in range(6)]     # 12-row strips of 64 rows
    want = chunk_checksums(f["sci"], (12, 80))
    assert {cid: crc for cid, (crc, _) in sci_chunks.items()} == want
    assert want["1.0"] == zlib.crc32(f["sci"][12:24].tobytes())
    assert all(size == 12 * 80 * 4 for _, size in sci_chunks.values())  # edge chunk padded
    _assert_frame_equal(store.read_frame("r42"), f)


def test_missing_mask_chunk_is_detected(tmp_path):
    store = _strip_store(tmp_path)
    f = _frame(4, shape=(120, 80))           # mask: 120 rows of 80 B in 51-row strips
    store.write_frame("r0042", **f)
    chunks = _chunk_files(store, "r0042", "mask")
    assert len(chunks) == 3
    os.unlink(chunks[1])                       # .../mask/c/1/0
    assert store.has_frame("r0042")            # cheap: metadata only (documented)
    with pytest.raises(IntermediateDamaged) as err:
        store.read_frame("r0042")
    assert str(err.value) == "r0042: mask chunk 1.0 missing"
    assert (err.value.key, err.value.chunk) == ("mask", "1.0")
    assert isinstance(err.value, IncompleteError)           # old handlers still catch it
    with pytest.raises(IntermediateDamaged, match="mask chunk 1.0 missing"):
        store.open_frame("r0042")
    # only the damaged array is refused; asking for the others still works
    _assert_frame_equal(store.read_frame("r0042", keys=("sci", "var")),
                        {k: f[k] for k in ("sci", "var")})
    e2 = pickle.loads(pickle.dumps(err.value))
    assert str(e2) == str(err.value) and e2.chunk == "1.0"
    store.write_frame("r0042", **f)            # recomputed: valid again
    _assert_frame_equal(store.read_frame("r0042"), f)


def test_truncated_chunk_is_detected(tmp_path):
    store = _strip_store(tmp_path)
    store.write_frame("r1", **_frame(5))
    p = _chunk_files(store, "r1", "var")[2]
    with open(p, "r+b") as fh:
        fh.truncate(os.path.getsize(p) // 2)
    with pytest.raises(IntermediateDamaged, match=r"^r1: var chunk 2\.0 truncated"):
        store.read_frame("r1")


@pytest.mark.parametrize("key", ["sci", "mask"])
def test_flipped_bit_is_detected(tmp_path, key):
    store = _strip_store(tmp_path)
    store.write_frame("r1", **_frame(6))
    p = _chunk_files(store, "r1", key)[0]
    data = bytearray(open(p, "rb").read())
    data[len(data) // 2] ^= 0x04             # in the float payload / inside the Blosc stream
    open(p, "wb").write(bytes(data))
    want = rf"^r1: {key} (chunk 0.0 does not match|cannot be decoded)"
    with pytest.raises(IntermediateDamaged, match=want):
        store.read_frame("r1")
    if key == "sci":                           # the unverified read believes it
        assert not np.array_equal(store.read_frame("r1", verify=False)["sci"], _frame(6)["sci"])


def test_frame_without_checksums_counts_as_damaged(tmp_path):
    store = _strip_store(tmp_path)
    store.write_frame("old", **_frame(7))
    meta_path = os.path.join(store.path, "frames", "old", "zarr.json")
    meta = json.load(open(meta_path))
    del meta["attributes"]["chunks"]          # as an older crdask wrote it
    json.dump(meta, open(meta_path, "w"))
    assert store.has_frame("old")
    with pytest.raises(IntermediateDamaged, match="without checksums"):
        store.read_frame("old")


def test_master_checksums(tmp_path):
    store = _strip_store(tmp_path)
    m = _frame(8)["sci"]
    store.write_master("bias", m)
    np.testing.assert_array_equal(store.read_master("bias"), m)
    p = sorted(os.path.join(d, f) for d, _, fs in
               os.walk(os.path.join(store.path, "masters", "bias", "data", "c")) for f in fs)[-1]
    os.unlink(p)
    with pytest.raises(IntermediateDamaged, match="^bias: data chunk 5.0 missing"):
        store.read_master("bias")


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 12),
       dtype=st.sampled_from(["f4", "f8", "u1", "i2", ">f4"]),
       max_chunk=st.sampled_from([16, 100, 10**6]),
       damage=st.sampled_from(["delete", "truncate", "flip", "extend"]),
       which=st.integers(0, 10**6), byte=st.integers(0, 10**6), bit=st.integers(0, 7),
       seed=st.integers(0, 2**16))
def test_any_damage_is_detected_never_believed(tmp_path_factory, rows, cols, dtype,
                                               max_chunk, damage, which, byte, bit, seed):
    """Whatever chunk is damaged, and however, a read either raises
    IntermediateDamaged or returns exactly the array written."""
    rng = np.random.default_rng(seed)
    a = (rng.normal(0, 100, (rows, cols)) if dtype[-2] == "f"
         else rng.integers(0, 50, (rows, cols))).astype(dtype)
    store = IntermediateStore(tmp_path_factory.mktemp("h") / "i.zarr", max_chunk_bytes=max_chunk)
    store.write_frame("x", a=a)
    files = _chunk_files(store, "x", "a")
    p = files[which % len(files)]
    data = bytearray(open(p, "rb").read())
    if damage == "delete":
        os.unlink(p)
    elif damage == "truncate":
        open(p, "wb").write(bytes(data[:byte % len(data)]))
    elif damage == "extend":
        open(p, "wb").write(bytes(data) + b"\0")
    else:
        data[byte % len(data)] ^= 1 << bit
        open(p, "wb").write(bytes(data))
    try:
        got = store.read_frame("x")["a"]
    except IntermediateDamaged as e:
        assert str(e).startswith("x: ")
    else:   # e.g. a flipped bit in a Blosc header flag that decoding ignores
        assert damage == "flip"
        np.testing.assert_array_equal(got, a)


def test_disk_full_names_the_file_and_leaves_frame_incomplete(tmp_path):
    from crdask.io.atomic import OutputWriteError
    from tmpfs import small_tmpfs

    mnt = tmp_path / "fs"
    with small_tmpfs(mnt, "1m") as fs:
        store = IntermediateStore(mnt / "intermediate.zarr")
        store.write_frame("small", **_frame(0, shape=(16, 16)))
        fs.fill(leave=100 * 1024)
        with pytest.raises(OutputWriteError) as err:
            store.write_frame("big", **_frame(1, shape=(256, 256)))   # 576 KB
        assert "no space left on device" in str(err.value)
        assert str(err.value).startswith(os.path.join(store.path, "frames", "big"))
        assert "\n" not in str(err.value)
        assert not store.has_frame("big") and store.frames() == ["small"]
        fs.free()
        store.write_frame("big", **_frame(1, shape=(256, 256)))
        _assert_frame_equal(store.read_frame("big"), _frame(1, shape=(256, 256)))
