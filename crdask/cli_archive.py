"""``crdask archive``: many nights in one command (layer 5: parse, call, print).

ROOT and ``--output`` may be paths or fsspec URLs (``s3://bucket/raw``, with
``pip install 'crdask[s3]'``); S3 credentials and the endpoint come from the
usual ``AWS_*`` variables or profiles, or ``--storage-option KEY=VALUE``
(prefer the environment for secrets: a command line is visible to other
users of the machine).

The lead registers :data:`archive_cmd` on the main group
(``cli.add_command(archive_cmd)``).
"""

import click

from .io.remote import scrub
from .pipeline.archive import ArchiveError, run_archive
from .pipeline.cluster import ClusterError
from .pipeline.config import WorkflowError

EXIT_OK, EXIT_USAGE = 0, 1


@click.command("archive")
@click.argument("root")
@click.option("--workflow", "-w", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Workflow template: every key but inputs/output applies to each night.")
@click.option("--output", "-o", default=None,
              help="Output root (path or URL); night N goes to OUTPUT/N "
                   "[default: the workflow's output].")
@click.option("--nights", default=None, metavar="FROM..TO",
              help="Which nights, by folder name: FROM..TO (inclusive, either end may be "
                   "empty), NAME[,NAME...], yesterday or today [default: all].")
@click.option("--pattern", default="*", show_default=True,
              help="Glob the night folder names must match, e.g. '20[0-9][0-9]*'.")
@click.option("--max-nights-in-flight", type=click.IntRange(min=1), default=2,
              show_default=True, help="Nights reduced at the same time on the one cluster.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Address of a running dask.distributed scheduler.")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False),
              help="Scheduler file written by dask scheduler / dask-jobqueue.")
@click.option("--cluster", default=None,
              type=click.Choice(["local", "slurm", "pbs", "kubernetes"]),
              help="Cluster to start when no scheduler is given [default: local].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers to start (local cluster size, or batch jobs/pods).")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=None)
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option for URL inputs/outputs (e.g. "
                   "endpoint_url=http://127.0.0.1:9000, anon=true); repeatable; never logged.")
@click.option("--scratch", default=None, type=click.Path(file_okay=False),
              help="Local folder for staged nights and their ledgers when ROOT or OUTPUT "
                   "is a URL [default: $CRDASK_SCRATCH or ~/.cache/crdask/archive/<hash>].")
@click.option("--keep-scratch", is_flag=True,
              help="Keep staged inputs and local outputs after a night is uploaded.")
@click.option("--restart", is_flag=True,
              help="Forget the archive state and every night's ledger; start clean.")
@click.pass_context
def archive_cmd(ctx, root, workflow, output, nights, pattern, max_nights_in_flight, scheduler,
                scheduler_file, cluster, workers, threads_per_worker, storage_option, scratch,
                keep_scratch, restart):
    """Reduce every night folder under ROOT with one workflow template, a
    bounded number of nights at a time on one cluster; one output folder,
    ledger and report per night, plus OUTPUT/archive-summary.{json,md}.
    Reruns skip finished nights."""
    connect_kw = {k: v for k, v in (("scheduler", scheduler),
                                    ("scheduler_file", scheduler_file), ("kind", cluster),
                                    ("workers", workers),
                                    ("threads_per_worker", threads_per_worker))
                  if v is not None}
    options = {}
    for item in storage_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            click.echo(f"crdask: error: --storage-option {key.strip() or item!r}: expected "
                       "KEY=VALUE", err=True)
            ctx.exit(EXIT_USAGE)
        # only true/false are converted: a key or secret must stay the exact string
        options[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value)
    try:
        result = run_archive(root, workflow, output=output, nights=nights, pattern=pattern,
                             max_nights_in_flight=max_nights_in_flight, restart=restart,
                             log=click.echo, connect_kw=connect_kw,
                             storage_options=options or None, scratch=scratch,
                             keep_scratch=keep_scratch)
    except (ArchiveError, WorkflowError, ClusterError, OSError) as e:
        click.echo(f"crdask: error: {scrub(e, options)}", err=True)
        ctx.exit(EXIT_USAGE)
    s = result.summary
    click.echo(f"crdask: {s['nights_total']} night(s): {s['nights_done']} reduced, "
               f"{s['nights_skipped']} finished before, {s['nights_set_aside']} with frames "
               f"set aside, {s['nights_failed']} failed, {s['nights_in_use']} in use; "
               f"summary {result.paths['md']}")
    ctx.exit(result.exit_code)
