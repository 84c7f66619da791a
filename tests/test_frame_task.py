"""Frame-task helpers: the worker warm-up."""

from crdask.pipeline.frame_task import warm_worker


def test_warm_worker_runs_the_frame_path_and_never_raises(tmp_path):
    wf = {"version": 1, "inputs": {"directory": str(tmp_path)}, "output": str(tmp_path / "o")}
    assert warm_worker(wf) > 0
    assert warm_worker({"version": 1, "inputs": {"directory": str(tmp_path)},
                        "output": str(tmp_path / "o"),
                        "steps": {"cosmics": {"method": "no-such-method"}}}) == 0.0
    assert not (tmp_path / "o").exists()    # a warm-up writes nothing
