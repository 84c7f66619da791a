"""Offline checks of the deploy/ recipes users copy.

* dask-jobqueue's real ``SLURMCluster`` / ``PBSCluster`` built from
  ``deploy/*/jobqueue.yaml`` generate job scripts with the expected
  directives (``job_script()``);
* the sbatch and PBS scripts pass ``bash -n`` and ``shellcheck``, contain no
  ``sleep`` or background starts, and pass crdask's exit code through (run
  for real with stand-ins for ``srun`` / ``crdask`` that exit 2);
* the Helm values, the DaskJob and the CronJob parse and name the image and
  the archive/output mounts; the Dockerfile builds from this repository with
  pinned dependencies (the image itself cannot be built here: no Docker);
* ``systemd-analyze verify`` passes on the units; the cron line is well
  formed; every crdask command in the recipes is one crdask accepts.
"""

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from cluster_helpers import ENV, REPO, crdask_cli

DEPLOY = REPO / "deploy"
IMAGE = "registry.example.org/crdask:0.1.0"
SCRIPTS = [DEPLOY / "slurm" / "crdask-night.sbatch", DEPLOY / "pbs" / "crdask-night.pbs"]


def jobqueue_config(kind):
    import dask
    import dask_jobqueue  # noqa: F401  (adds its defaults to Dask's configuration)

    doc = yaml.safe_load((DEPLOY / kind / "jobqueue.yaml").read_text())
    assert list(doc) == ["jobqueue"] and list(doc["jobqueue"]) == [kind]
    # key by key, as Dask merges a jobqueue.yaml over dask-jobqueue's defaults
    return dask.config.set({f"jobqueue.{kind}.{k}": v for k, v in doc["jobqueue"][kind].items()})


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_scripts_from_deploy_config(kind, monkeypatch):
    from crdask.pipeline.cluster import make_deployer

    monkeypatch.setenv("TMPDIR", "/scratch/tmp")
    with jobqueue_config(kind):
        cluster = make_deployer(kind)
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert "--nthreads 8" in script and "--memory-limit 32.00GiB" in script
    assert "--lifetime 3h45m" in script and "--lifetime-stagger 5m" in script
    assert "--lifetime-restart" in script
    assert "--local-directory $TMPDIR" in script or "/scratch/tmp" in script
    assert "source $HOME/crdask-env/bin/activate" in script
    if kind == "slurm":
        for d in ("#SBATCH -J crdask-worker", "#SBATCH -n 1", "#SBATCH --cpus-per-task=8",
                  "#SBATCH --mem=32G", "#SBATCH -t 04:00:00", "#SBATCH --exclusive"):
            assert d in script, (d, script)
    else:
        for d in ("#PBS -N crdask-worker", "#PBS -l select=1:ncpus=8:mem=32GB",
                  "#PBS -l walltime=04:00:00"):
            assert d in script, (d, script)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_job_scripts_lint(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    sc = shutil.which("shellcheck")
    assert sc, "shellcheck is not installed (apt-get install shellcheck)"
    res = subprocess.run([sc, "--shell=bash", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    text = script.read_text()
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not any(re.search(r"\bsleep\b", ln) for ln in code)
    assert not any(re.search(r"&\s*$", ln) for ln in code), "nothing started in the background"
    assert "set -euo pipefail" in text and "|| status=$?" in text and 'exit "${status}"' in text


def _fake(bin_dir, name, body):
    p = bin_dir / name
    p.write_text("#!/bin/bash\n" + body + "\n")
    p.chmod(0o755)


@pytest.mark.parametrize("code", [0, 2])
def test_sbatch_passes_exit_code_through(tmp_path, code):
    """Run the sbatch script with bash, a stand-in ``srun`` recording its
    command line and exiting like crdask would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "srun", f'echo "$@" > "{tmp_path}/srun.args"\nexit {code}')
    env = {**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "99",
           "SLURM_NTASKS": "8", "SLURM_CPUS_PER_TASK": "4"}
    res = subprocess.run(["bash", str(SCRIPTS[0]), "night.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == code, res.stdout + res.stderr
    assert f"crdask-night: exit {code}" in res.stdout
    args = (tmp_path / "srun.args").read_text().split()
    assert args[:2] == ["--ntasks=8", "--cpus-per-task=4"]
    assert args[2:7] == ["python", "-m", "crdask", "run", "night.yaml"]
    assert "--cluster" in args and args[args.index("--cluster") + 1] == "slurm-runner"
    assert args[args.index("--scheduler-file") + 1] == f"{tmp_path}/scheduler-99.json"


@pytest.mark.parametrize("code", [0, 2])
def test_pbs_passes_exit_code_through(tmp_path, code):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "crdask", f'echo "$@" > "{tmp_path}/crdask.args"\nexit {code}')
    env = {**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PBS_O_WORKDIR": str(tmp_path), "NIGHT_YAML": "night.yaml"}
    res = subprocess.run(["bash", str(SCRIPTS[1])], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == code, res.stdout + res.stderr
    assert (tmp_path / "crdask.args").read_text().split() == ["run", "night.yaml", "--cluster",
                                                              "pbs"]


def test_helm_values_name_image_and_mounts():
    v = yaml.safe_load((DEPLOY / "kubernetes" / "helm-values.yaml").read_text())
    for part in ("scheduler", "worker"):
        img = v[part]["image"]
        assert f"{img['repository']}:{img['tag']}" == IMAGE
    w = v["worker"]
    assert w["replicas"] >= 1 and w["resources"]["limits"]["memory"]
    mounts = {m["name"]: m for m in w["mounts"]["volumeMounts"]}
    vols = {m["name"]: m for m in w["mounts"]["volumes"]}
    assert mounts["archive"]["mountPath"] == "/archive" and mounts["archive"]["readOnly"]
    assert mounts["output"]["mountPath"] == "/output" and not mounts["output"].get("readOnly")
    assert set(vols) == {"archive", "output"}
    assert v["scheduler"]["serviceType"] == "ClusterIP" and v["jupyter"]["enabled"] is False


def _nightly():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "crdask-nightly.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    return kinds


def test_daskjob_and_cronjob():
    k = _nightly()
    cron = k["CronJob"]["spec"]
    assert cron["schedule"] == "0 8 * * *" and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == k["ServiceAccount"]["metadata"]["name"]
    submit = pod["containers"][0]
    assert "kubectl create -f -" in submit["args"][0]
    assert re.search(r":v\d+\.\d+\.\d+$", submit["image"]), "kubectl image pinned"
    job = yaml.safe_load(k["ConfigMap"]["data"]["daskjob.yaml"])
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    jc = job["spec"]["job"]["spec"]["containers"][0]
    assert jc["image"] == IMAGE
    assert jc["args"][:2] == ["crdask", "archive"] and "$(DASK_SCHEDULER_ADDRESS)" in jc["args"]
    cl = job["spec"]["cluster"]["spec"]
    images = {c["image"] for c in cl["worker"]["spec"]["containers"]} | \
        {c["image"] for c in cl["scheduler"]["spec"]["containers"]}
    assert images == {IMAGE}
    for spec in (job["spec"]["job"]["spec"], cl["worker"]["spec"]):
        mounts = {m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"]}
        assert {"/archive", "/output"} <= mounts
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {"crdask-archive", "crdask-output"}
    sel = cl["scheduler"]["service"]["selector"]
    assert sel["dask.org/cluster-name"] == job["metadata"]["name"]
    # the archive command of the job is one crdask accepts
    args = [a if a != "$(DASK_SCHEDULER_ADDRESS)" else "tcp://x:8786" for a in jc["args"][1:]]
    assert_crdask_accepts(args)


def test_dockerfile_builds_from_this_repository_pinned():
    text = (DEPLOY / "kubernetes" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base   # no floating tag
    assert "COPY crdask ./crdask" in text and "COPY pyproject.toml" in text
    assert re.search(r'pip install --constraint constraints.txt "\.\[kubernetes\]"', text)
    assert not re.search(r"pip install[^\n]*['\"]?crdask", text), "never from an index"
    assert "USER 1000" in text and IMAGE in text
    pins = [ln for ln in (DEPLOY / "kubernetes" / "constraints.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", p) for p in pins), pins
    names = {p.split("==")[0].lower() for p in pins}
    assert {"numpy", "astropy", "dask", "distributed", "numba", "zarr", "click",
            "pyyaml", "dask-kubernetes"} <= names


def test_systemd_units_verify(tmp_path):
    units = [DEPLOY / "systemd" / "crdask-night.service", DEPLOY / "systemd" /
             "crdask-night.timer"]
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not available on this machine")
    res = subprocess.run([tool, "verify", *map(str, units)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    service = units[0].read_text()
    assert "SuccessExitStatus=2" in service and "Type=oneshot" in service
    exec_line = re.search(r"^ExecStart=(.*)$", service, re.M).group(1)
    argv = shlex.split(exec_line)
    assert argv[:2] == ["/usr/bin/env", "crdask"] and "yesterday" in argv
    assert_crdask_accepts(argv[2:])
    timer = units[1].read_text()
    assert "OnCalendar=*-*-* 08:00:00" in timer and "Persistent=true" in timer


def test_cron_line():
    lines = [ln for ln in (DEPLOY / "cron" / "crdask-night.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert fields[:5] == ["0", "8", "*", "*", "*"]
    argv = shlex.split(fields[5].split(">>")[0])
    assert argv[0] == "crdask" and "yesterday" in argv
    assert_crdask_accepts(argv[1:])


def assert_crdask_accepts(args):
    """``crdask CMD --help`` lists every option the recipe uses."""
    cmd, opts = args[0], [a for a in args[1:] if a.startswith("--")]
    res = crdask_cli(cmd, "--help")
    assert res.returncode == 0, res.stderr
    for o in opts:
        assert o in res.stdout, (cmd, o)


def test_recipe_run_commands_exist():
    res = crdask_cli("run", "--help")
    assert "--cluster" in res.stdout and "slurm-runner" in res.stdout
    assert "--scheduler-file" in res.stdout and "--threads-per-worker" in res.stdout
