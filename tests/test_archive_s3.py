"""Archive mode from ``s3://`` to ``s3://`` against a real local object-store
server (moto's server mode on 127.0.0.1, a random port; s3fs and boto3
talk HTTP to it through ``AWS_ENDPOINT_URL`` / ``endpoint_url``).

Two tiny simulated nights are uploaded as raw objects; ``crdask archive``
(a real subprocess, real LocalCluster workers) reduces one, then the
Python entry point reduces the archive again: the finished night is skipped
(its objects untouched), the other is reduced, and both equal a local run of
the same nights. Secrets put in the environment and in the storage options
appear in no log line, report, summary or uploaded object.
"""

import hashlib
import json
import os
import uuid

import pytest

from cluster_helpers import (CALIBS, ENV, assert_same_outputs, science_stems, show,
                             write_workflow)

SIZE = 64
N_SCIENCE = 2
NIGHTS = ["20261101", "20261102"]
ENV_SECRET = "envSECRET-" + uuid.uuid4().hex          # AWS_SECRET_ACCESS_KEY
OPT_SECRET = "optSECRET-" + uuid.uuid4().hex          # storage_options["secret"]
KEY_ID = "AKIDcrdask" + uuid.uuid4().hex[:8].upper()


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1:<random port> with one bucket."""
    import s3fs  # noqa: F401 - in the test extra; a missing one must fail, not skip
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": ENV_SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = "crdask-" + uuid.uuid4().hex[:8]
    client.create_bucket(Bucket=bucket)
    try:
        yield {"endpoint": endpoint, "env": env, "client": client, "bucket": bucket}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def objects(s3, prefix):
    """{key: (ETag, LastModified, size)} of every object under ``prefix``."""
    res = {}
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"],
                                                                   Prefix=prefix)
    for page in pages:
        for o in page.get("Contents", []):
            res[o["Key"]] = (o["ETag"], o["LastModified"], o["Size"])
    return res


def download(s3, prefix, dest):
    for key in objects(s3, prefix):
        path = dest / key[len(prefix):].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        s3["client"].download_file(s3["bucket"], key, str(path))
    return dest


@pytest.fixture(scope="module")
def archive(s3, tmp_path_factory):
    """Two nights: local copies (the reference) and the same bytes in the bucket."""
    from crdask.simulate import write_night

    base = tmp_path_factory.mktemp("s3archive")
    root = base / "raw"
    for i, name in enumerate(NIGHTS):
        write_night(root / name, shape=(SIZE, SIZE), n_science=N_SCIENCE, seed=70 + i,
                    **CALIBS)
    for name in NIGHTS:
        for p in sorted((root / name).iterdir()):
            s3["client"].upload_file(str(p), s3["bucket"], f"raw/{name}/{p.name}")
    (root / "notes").mkdir()
    s3["client"].put_object(Bucket=s3["bucket"], Key="raw/notes/log.txt", Body=b"clear sky")
    tpl = write_workflow(base / "template.yaml", root / NIGHTS[0], base / "unused")
    return base, root, tpl


@pytest.mark.slow
def test_s3_to_s3_equals_local_and_rerun_reduces_only_the_missing_night(s3, archive, tmp_path):
    from crdask.pipeline.archive import run_archive

    base, root, tpl = archive
    bucket = s3["bucket"]
    raw_before = objects(s3, "raw/")
    scratch = tmp_path / "scratch"
    src, dst = f"s3://{bucket}/raw", f"s3://{bucket}/reduced"
    env = {**ENV, **s3["env"]}

    # 1. the CLI, one night, credentials from the environment
    import subprocess
    import sys
    first = subprocess.run([sys.executable, "-m", "crdask", "archive", src, "--workflow",
                            str(tpl), "--output", dst, "--nights", NIGHTS[0], "--workers", "1",
                            "--scratch", str(scratch)], env=env, capture_output=True,
                           text=True, cwd=tmp_path, timeout=900)
    assert first.returncode == 0, show(first)
    assert "1 night(s) under s3://" in first.stdout, show(first)
    marker = json.loads(s3["client"].get_object(Bucket=bucket, Key=f"reduced/archive/"
                                                f"{NIGHTS[0]}.json")["Body"].read())
    assert marker["status"] == "done" and "report.json" in marker["objects"], marker
    after_first = objects(s3, f"reduced/{NIGHTS[0]}/")
    assert sorted(k.rsplit("/", 1)[1] for k in after_first if k.endswith("_cal.fits")) == \
        [f"{s}_cal.fits" for s in science_stems(root / NIGHTS[0])]
    assert not any("intermediate.zarr" in k or k.rsplit("/", 1)[1].startswith(".")
                   for k in after_first), sorted(after_first)
    for rel, rec in marker["objects"].items():         # every listed object, as listed
        body = s3["client"].get_object(Bucket=bucket, Key=f"reduced/{NIGHTS[0]}/{rel}")
        assert hashlib.sha256(body["Body"].read()).hexdigest() == rec["sha256"], rel
    # a done night's staged copy and local outputs are gone; nothing leaks
    assert not (scratch / "raw" / NIGHTS[0]).exists()
    assert not (scratch / "out" / NIGHTS[0]).exists()

    # 2. the Python entry point, all nights, credentials in the storage
    # options; 3. the same nights reduced locally (the reference), same client
    from distributed import Client, LocalCluster

    lines = []
    options = {"key": KEY_ID, "secret": OPT_SECRET, "endpoint_url": s3["endpoint"]}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        second = run_archive(src, str(tpl), output=dst, storage_options=options,
                             scratch=scratch, client=client, log=lines.append)
        ref = run_archive(root, str(tpl), output=tmp_path / "local", client=client,
                          log=lambda line: None)
    assert second.exit_code == 0, lines
    assert ref.exit_code == 0 and ref.summary["nights_done"] == 2, ref.summary
    s = {n["night"]: n for n in second.summary["nights"]}
    assert s[NIGHTS[0]]["status"] == "skipped" and s[NIGHTS[1]]["status"] == "done", s
    assert s[NIGHTS[1]]["reduced"] == N_SCIENCE
    assert objects(s3, f"reduced/{NIGHTS[0]}/") == after_first     # not rewritten
    assert objects(s3, "raw/") == raw_before                       # the source only read
    assert second.summary["archive"] == src and second.summary["output"] == dst

    got = download(s3, "reduced/", tmp_path / "from_s3")
    for name in NIGHTS:
        assert_same_outputs(got / name, tmp_path / "local" / name, science_stems(root / name))
    summary = json.loads((got / "archive-summary.json").read_text())
    assert summary["nights_total"] == 2 and summary["nights_skipped"] == 1

    # 4. no secret anywhere: log lines, CLI output, local and uploaded files
    texts = [first.stdout, first.stderr, "\n".join(lines)]
    texts += [p.read_bytes().decode("latin-1") for p in got.rglob("*") if p.is_file()]
    texts += [p.read_bytes().decode("latin-1") for p in scratch.rglob("*") if p.is_file()]
    for secret in (ENV_SECRET, OPT_SECRET):
        assert not any(secret in t for t in texts), secret


def test_s3_listing_staging_and_markers(s3, archive, tmp_path):
    """Fast checks on the pieces: nights listed through fsspec, a damaged
    staged copy fetched again, a marker whose objects went missing not
    trusted, names that would leave the prefix refused, one-line errors."""
    from crdask.io.remote import RemoteError, RemoteFolder, STAGED_MANIFEST, scrub
    from crdask.pipeline.archive import ArchiveError, find_nights
    from crdask.pipeline.archive_store import archive_outputs

    _, root, _ = archive
    bucket = s3["bucket"]
    assert [n for n, _ in find_nights(f"s3://{bucket}/raw")] == NIGHTS       # not "notes"
    assert [n for n, _ in find_nights(f"s3://{bucket}/raw", nights=NIGHTS[1])] == NIGHTS[1:]

    folder = RemoteFolder(f"s3://{bucket}/raw")
    dest = folder.stage(NIGHTS[0], tmp_path / "st")
    names = sorted(p.name for p in (root / NIGHTS[0]).iterdir())
    assert sorted(p.name for p in dest.iterdir() if p.name != STAGED_MANIFEST) == names
    victim = dest / names[0]
    want = victim.read_bytes()
    assert want == (root / NIGHTS[0] / names[0]).read_bytes()
    victim.write_bytes(b"\0" * len(want))                      # damaged, same size
    folder.stage(NIGHTS[0], dest)
    assert victim.read_bytes() == want

    out = archive_outputs(f"s3://{bucket}/markers")
    (tmp_path / "night" / "sub").mkdir(parents=True)
    (tmp_path / "night" / "report.json").write_text("{}")
    (tmp_path / "night" / "sub" / "x_cal.fits").write_bytes(b"x" * 2880)
    out.local_root = tmp_path
    doc = out.commit("night", {"status": "done"})
    assert out.state("night") == doc and out.finished("night", doc)
    s3["client"].delete_object(Bucket=bucket, Key="markers/night/sub/x_cal.fits")
    assert not out.finished("night", doc)

    with pytest.raises(RemoteError, match=r"'\.' or '\.\.'"):
        folder.put_bytes("../escape.txt", b"x")
    with pytest.raises(ArchiveError, match="nothing-here: no such folder"):
        from crdask.pipeline.archive import run_archive
        run_archive(f"s3://{bucket}/nothing-here", archive[2], output=tmp_path / "o",
                    scratch=tmp_path / "sc")
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "crdask", "archive",
                          f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/raw", "--workflow",
                          str(archive[2]), "--output", str(tmp_path / "o2"), "--scratch",
                          str(tmp_path / "sc2"), "--storage-option", f"key={KEY_ID}",
                          "--storage-option", f"secret={OPT_SECRET}"],
                         env={**ENV, **s3["env"]}, capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, show(res)
    assert "no-such-bucket" in res.stderr and "no such folder" in res.stderr, show(res)
    assert OPT_SECRET not in res.stdout + res.stderr and ENV_SECRET not in res.stderr
    assert scrub(f"key {OPT_SECRET}", {"secret": OPT_SECRET}) == "key ***"


@pytest.mark.slow
def test_mixed_sides_local_to_s3_and_s3_to_local_equal_local(s3, archive, tmp_path):
    """Only one side behind a URL: a local archive reduced into ``s3://``
    (the CLI), and the ``s3://`` archive reduced into a local folder (the
    Python entry point); both give the outputs of an all-local run."""
    import subprocess
    import sys

    from distributed import Client, LocalCluster

    from crdask.pipeline.archive import run_archive

    base, root, tpl = archive
    bucket = s3["bucket"]
    raw_before = objects(s3, "raw/")
    local_before = {p: p.read_bytes() for p in sorted(root.rglob("*.fits"))}

    # local archive -> s3:// output, through the CLI
    dst, scratch_up = f"s3://{bucket}/mixed-up", tmp_path / "scratch-up"
    up = subprocess.run([sys.executable, "-m", "crdask", "archive", str(root), "--workflow",
                         str(tpl), "--output", dst, "--workers", "1", "--scratch",
                         str(scratch_up)], env={**ENV, **s3["env"]}, capture_output=True,
                        text=True, cwd=tmp_path, timeout=900)
    assert up.returncode == 0, show(up)
    assert f"2 night(s) under {root}: 2 to reduce" in up.stdout, show(up)
    for name in NIGHTS:
        marker = json.loads(s3["client"].get_object(
            Bucket=bucket, Key=f"mixed-up/archive/{name}.json")["Body"].read())
        assert marker["status"] == "done" and "report.json" in marker["objects"], marker
        assert not (scratch_up / "out" / name).exists()     # uploaded, then dropped
    assert "mixed-up/archive-summary.json" in objects(s3, "mixed-up/")

    # s3:// archive -> local output, Python entry point; and the reference
    options = {"endpoint_url": s3["endpoint"]}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        down = run_archive(f"s3://{bucket}/raw", str(tpl), output=tmp_path / "down",
                           storage_options=options, scratch=tmp_path / "scratch-down",
                           client=client, log=lambda line: None)
        ref = run_archive(root, str(tpl), output=tmp_path / "local", client=client,
                          log=lambda line: None)
    assert down.exit_code == 0 and down.summary["nights_done"] == 2, down.summary
    assert ref.exit_code == 0 and ref.summary["nights_done"] == 2, ref.summary
    assert down.summary["archive"] == f"s3://{bucket}/raw"
    assert (tmp_path / "down" / "archive-summary.json").is_file()
    for name in NIGHTS:                       # the staged copy goes once the night is done
        assert not (tmp_path / "scratch-down" / "raw" / name).exists()

    got = download(s3, "mixed-up/", tmp_path / "from_s3")
    for name in NIGHTS:
        stems = science_stems(root / name)
        assert_same_outputs(got / name, tmp_path / "local" / name, stems)
        assert_same_outputs(tmp_path / "down" / name, tmp_path / "local" / name, stems)
    # both sources only read
    assert objects(s3, "raw/") == raw_before
    assert {p: p.read_bytes() for p in sorted(root.rglob("*.fits"))} == local_before

    # a rerun in each direction skips both nights
    again = run_archive(f"s3://{bucket}/raw", str(tpl), output=tmp_path / "down",
                        storage_options=options, scratch=tmp_path / "scratch-down",
                        log=lambda line: None)
    assert again.summary["nights_skipped"] == 2, again.summary
    again = run_archive(root, str(tpl), output=dst, storage_options=options,
                        scratch=scratch_up, log=lambda line: None)
    assert again.summary["nights_skipped"] == 2, again.summary
