"""``execution`` of a workflow: how a night is run, never what it produces (layer 4).

The defaults are written once (:data:`EXECUTION_DEFAULTS`); the section is
checked by :func:`execution_section` and held as :class:`Execution`, which
:func:`crdask.pipeline.cluster.connect` turns into a Dask client. None of it
enters :func:`crdask.pipeline.config.config_hash`: outputs are identical
however they are computed.

Example
-------
>>> from pathlib import Path
>>> from crdask.pipeline.schema import Checker
>>> execution_section(Checker("n.yaml", Path(".")), {"workers": 2}).workers
2
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .calibration import CalibSetup
from .cluster import CLUSTER_CHOICES
from .schema import WorkflowError, join_path, show

#: Every ``execution`` key and its default.
EXECUTION_DEFAULTS = {
    "chunk_rows": CalibSetup().chunk_rows,            # 512
    # Keep every calibrated frame (before CR cleaning) in OUT/intermediate.zarr.
    # Off by default: a frame is calibrated and cleaned in one task, and a
    # calibrated 2048^2 frame (sci, var, mask: 38 MB, 4.5x its raw file) takes
    # longer to write (65 ms, plus the kernel's page-cache work: a 20-frame
    # night 1.3x slower) than to recompute from raw (30 ms) or to read back
    # (40 ms). The ledger is the resume point; exposure groups' members are
    # kept whatever this says, since their group task reads them.
    "intermediates": False,
    "scheduler": None,
    "scheduler_file": None,
    "workers": None,
    "threads_per_worker": None,
    "memory_limit": None,
    # A local cluster's workers as threads of this process (the default:
    # the kernels release the GIL, and one start-up and one numba cache load
    # instead of one per worker process is a third less CPU and 40 % less
    # memory on a 2-core night, as Dask advises for GIL-releasing numeric
    # work) or, true, as processes (isolated: a worker that dies is replaced
    # and its frame retried; with threads a crash stops the run, which then
    # resumes from the ledger).
    "processes": False,
    "cluster": None,        # null = local; slurm | pbs | kubernetes | slurm-runner
    "adapt": None,          # {minimum, maximum} workers (batch kinds)
}


@dataclass(frozen=True)
class Execution:
    """``execution``: how the work is run (never what it produces)."""

    chunk_rows: int = 512
    intermediates: bool = False
    scheduler: str | None = None
    scheduler_file: Path | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: object = None
    processes: bool = False      # local cluster: threads here, or worker processes
    cluster: str | None = None   # local | slurm | pbs | kubernetes | slurm-runner
    adapt: dict | None = None    # {"minimum": m, "maximum": n} workers

    def to_dict(self):
        """The section as a plain mapping (every key of :data:`EXECUTION_DEFAULTS`)."""
        return {
            "chunk_rows": self.chunk_rows,
            "intermediates": self.intermediates,
            "scheduler": self.scheduler,
            "scheduler_file": None if self.scheduler_file is None else str(self.scheduler_file),
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
            "processes": self.processes,
            "cluster": self.cluster,
            "adapt": None if self.adapt is None else dict(self.adapt),
        }


def execution_section(ctx, raw):
    """Validate the ``execution`` mapping ``raw`` (None: every default) with
    the :class:`~crdask.pipeline.schema.Checker` ``ctx``; an
    :class:`Execution`, or a one-line ``WorkflowError`` naming the key."""
    path = "execution"
    raw = ctx.mapping(raw, path, list(EXECUTION_DEFAULTS))
    v = {**EXECUTION_DEFAULTS, **raw}
    j = lambda k: join_path(path, k)  # noqa: E731
    if v["scheduler"] is not None and v["scheduler_file"] is not None:
        raise ctx.error(j("scheduler_file"), "scheduler and scheduler_file are both given",
                        "one of them, or neither (a local cluster)")
    mem = v["memory_limit"]
    allowed = "null, 'auto', a number of bytes or a size such as '4GiB'"
    if mem is not None:
        if isinstance(mem, str) and mem.strip().lower() == "auto":
            mem = "auto"
        elif isinstance(mem, str):
            from dask.utils import parse_bytes
            try:
                if parse_bytes(mem) <= 0:
                    raise ValueError
            except (ValueError, TypeError):
                raise ctx.error(j("memory_limit"), f"{show(mem)} is not a size",
                                allowed) from None
            mem = mem.strip()
        else:
            try:
                mem = ctx.number(mem, j("memory_limit"), integer=True, minimum=1)
            except WorkflowError:
                raise ctx.error(j("memory_limit"), f"{show(mem)} is not a size",
                                allowed) from None
    # cluster kind and adaptive scaling (crdask.pipeline.cluster)
    kinds = CLUSTER_CHOICES
    if v["cluster"] is not None and v["cluster"] not in kinds:
        raise ctx.error(j("cluster"), f"{show(v['cluster'])} is not a cluster kind",
                        "null, " + ", ".join(kinds))
    if v["cluster"] not in (None, "local", "slurm-runner") and (v["scheduler"]
                                                              or v["scheduler_file"]):
        raise ctx.error(j("cluster"), f"cluster {v['cluster']} starts its own scheduler "
                        "but a scheduler is given too", "one of them")
    adapt = v["adapt"]
    if adapt is not None:
        adapt = ctx.mapping(adapt, j("adapt"), ["minimum", "maximum"])
        if "maximum" not in adapt:
            raise ctx.error(join_path(j("adapt"), "maximum"), "missing", "a number of workers >= 1")
        lo = ctx.number(adapt.get("minimum", 0), join_path(j("adapt"), "minimum"), integer=True,
                        minimum=0)
        hi = ctx.number(adapt["maximum"], join_path(j("adapt"), "maximum"), integer=True,
                        minimum=max(1, lo))
        adapt = {"minimum": lo, "maximum": hi}
    return Execution(
        cluster=v["cluster"], adapt=adapt,
        chunk_rows=ctx.number(v["chunk_rows"], j("chunk_rows"), integer=True, minimum=1),
        intermediates=ctx.flag(v["intermediates"], j("intermediates")),
        scheduler=ctx.text(v["scheduler"], j("scheduler"), none_ok=True,
                           allowed="a scheduler address such as 'tcp://host:8786'"),
        scheduler_file=ctx.path(v["scheduler_file"], j("scheduler_file"), none_ok=True),
        workers=ctx.number(v["workers"], j("workers"), integer=True, minimum=1,
                           none_ok=True),
        threads_per_worker=ctx.number(v["threads_per_worker"], j("threads_per_worker"),
                                      integer=True, minimum=1, none_ok=True),
        memory_limit=mem,
        processes=ctx.flag(v["processes"], j("processes")),
    )
