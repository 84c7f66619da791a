"""``crdask`` command line (layer 5): parse options, call layer 4 (or 2), print.

Exit codes (DESIGN.md): 0 all good; 1 usage or configuration error (click's
own usage errors, which it would exit with 2, are mapped to 1); 2 finished
with some files set aside (each named on one ``crdask: error:`` line, and
listed again at the end).
"""

import dataclasses
import gc
import importlib
import sys
import time

import click
from click.core import ParameterSource

from ._version import __version__
from .cosmic.lacosmic import PARAMS as LACOSMIC
from .pipeline.clean_files import clean_files, validate_params
from .pipeline.cluster import CLUSTER_CHOICES, ClusterError

EXIT_OK, EXIT_USAGE, EXIT_SET_ASIDE = 0, 1, 2


#: Commands defined in their own modules (each imports only layers below),
#: imported when they are called (or listed by ``--help``): ``crdask
#: crmasks`` then does not import the archive's, the QA's or the pair
#: method's modules (0.2 s of a 10 s run).
LAZY_COMMANDS = {
    "archive": ("crdask.cli_archive", "archive_cmd"),
    "cr2images": ("crdask.cli_cr2images", "cr2images_cmd"),
    "crmasks": ("crdask.cli_crmasks", "crmasks_cmd"),
    "demo": ("crdask.cli_simulate", "demo"),
    "qa": ("crdask.cli_qa", "qa_cmd"),
    "simulate": ("crdask.cli_simulate", "simulate_grp"),
}


class _Group(click.Group):
    """A click group whose usage errors exit with 1, not click's 2, and
    whose :data:`LAZY_COMMANDS` are imported on first use (click's
    lazy-loading group pattern)."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, cmd_name):
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attr = LAZY_COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False,
                                **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                              **extra)
        except click.UsageError as e:
            e.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_USAGE)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crdask")
def cli():
    """crdask: CCD reduction and cosmic-ray cleaning on Dask."""


def _given(ctx, name):
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                               ParameterSource.ENVIRONMENT)


@cli.command("lacosmic")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--out-dir", "-o", required=True, type=click.Path(file_okay=False),
              help="Directory for the cleaned files (created if missing).")
@LACOSMIC.click_options()
@click.option("--hdu", default=None,
              help="Image HDU: index or EXTNAME [default: first HDU with 2-D data].")
@click.option("--mask-hdu", default=None,
              help="HDU (index or EXTNAME) of an input bad-pixel mask; non-zero = bad.")
@click.option("--gain-key", default=None, metavar="KEYWORD",
              help="Read the gain from this header keyword (e.g. GAIN).")
@click.option("--readnoise-key", default=None, metavar="KEYWORD",
              help="Read the read noise from this header keyword (e.g. RDNOISE).")
@click.option("--suffix", default="_crclean", show_default=True,
              help="Output name: <input stem><suffix>.fits.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Address of a running dask.distributed scheduler.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local cluster [default: sized to the machine].")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
              help="Threads per worker (per file) [default: cores shared by workers].")
@click.pass_context
def lacosmic_cmd(ctx, files, out_dir, hdu, mask_hdu, gain_key, readnoise_key, suffix,
                 overwrite, scheduler, workers, threads_per_worker, **params):
    """Find and clean cosmic rays in FITS FILE(s) with L.A.Cosmic.

    Writes OUT_DIR/<stem><suffix>.fits per input: the cleaned image (float32,
    input header, HISTORY provenance, CRNFIX) and a MASK extension (uint8,
    1 = cosmic ray). Inputs are never modified. Several files run in parallel
    on a local Dask cluster, or on --scheduler.
    """
    for key, name in ((gain_key, "gain"), (readnoise_key, "readnoise")):
        if key is not None and _given(ctx, name):
            raise click.UsageError(f"use either --{name} or --{name}-key, not both")
    if scheduler is not None and workers is not None:
        raise click.UsageError("--workers sets up a local cluster; it cannot be used "
                               "with --scheduler")
    try:
        validate_params(params)
    except (TypeError, ValueError) as e:
        raise click.UsageError(f"invalid lacosmic parameter: {e}") from None

    t0 = time.perf_counter()

    def report(s):
        where = s["input"] if s.get("hdu") is None else f"{s['input']}[{s['hdu']}]"
        for w in s.get("warnings") or ():
            click.echo(f"crdask: warning: {where}: {w}", err=True)
        if s["ok"]:
            click.echo(f"{where} -> {s['output']}: {s['ncr']} CR pixels, "
                       f"{s['seconds']:.2f} s")
        else:
            click.echo(f"crdask: error: {s['error']}", err=True)

    try:
        results = clean_files(list(files), out_dir, params, hdu=hdu, mask_hdu=mask_hdu,
                              gain_key=gain_key, readnoise_key=readnoise_key,
                              suffix=suffix, overwrite=overwrite, scheduler=scheduler,
                              workers=workers, threads_per_worker=threads_per_worker,
                              on_result=report, log=lambda m: click.echo(f"crdask: {m}"))
    except ClusterError as e:
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)
    except OSError as e:  # e.g. out-dir cannot be created
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)

    bad = [s for s in results if not s["ok"]]
    n_ok = len(results) - len(bad)
    if len(results) > 1 or bad:
        click.echo(f"crdask: {n_ok} of {len(results)} file(s) cleaned in "
                   f"{time.perf_counter() - t0:.1f} s")
    if bad:
        click.echo(f"crdask: {len(bad)} file(s) set aside:", err=True)
        for s in bad:
            click.echo(f"  {s['error']}", err=True)
        ctx.exit(EXIT_SET_ASIDE)
    ctx.exit(EXIT_OK)


def _calib_setup(hdu, overscan, trim, gain, readnoise):
    from .pipeline.calibration import CalibSetup
    return CalibSetup(hdu=hdu, overscan=None if overscan in ("none", "") else overscan,
                      trim=None if trim in ("none", "") else trim, gain=gain,
                      readnoise=readnoise)


_SETUP_OPTIONS = [
    click.option("--hdu", default=None, help="Image HDU: index or EXTNAME."),
    click.option("--overscan", default="BIASSEC", show_default=True,
                 help="Overscan region: header keyword or FITS section "
                      "'[x1:x2,y1:y2]'; 'none' for no overscan correction."),
    click.option("--trim", default="DATASEC", show_default=True,
                 help="Region to keep: header keyword or FITS section; 'none' to keep all."),
    click.option("--gain", type=float, default=None,
                 help="Gain, e-/ADU [default: from the headers]."),
    click.option("--readnoise", type=float, default=None,
                 help="Read noise, e- [default: from the headers]."),
]


def _setup_options(f):
    for opt in reversed(_SETUP_OPTIONS):
        f = opt(f)
    return f


@cli.command("catalog")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--hdu", default=None, help="Image HDU: index or EXTNAME.")
@click.pass_context
def catalog_cmd(ctx, directory, as_json, hdu):
    """Catalogue the FITS files of DIRECTORY from their headers: frame type
    and subtype, exposure, object, instrument setup (filter/grism/slit/
    binning/window), the calibration groups and the exposure groups
    (equivalent science exposures), then warnings (non-ASCII cards,
    duplicates, ...). Files set aside are listed with the reason (exit code 2)."""
    from .io.catalog import build_catalog
    from .io.fits import parse_hdu

    cat = build_catalog(directory, hdu=parse_hdu(hdu) if hdu is not None else None)
    click.echo(cat.to_json() if as_json else cat.format_table())
    ctx.exit(EXIT_SET_ASIDE if cat.unreadable else EXIT_OK)


@cli.command("gain")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--filter", "filt", default=None,
              help="Filter of the flats to use [default: the one with most flats].")
@_setup_options
@click.pass_context
def gain_cmd(ctx, directory, filt, hdu, overscan, trim, gain, readnoise):
    """Measure gain (e-/ADU) and read noise (e-) from the night's flats and
    biases (photon transfer, Janesick); warn where the headers differ by
    more than 10%."""
    from .pipeline.gain import measure_gain

    try:
        rep = measure_gain(directory, _calib_setup(hdu, overscan, trim, None, None),
                           filter=filt)
    except ValueError as e:
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)
    r = rep.result
    click.echo(f"gain       {r.gain:.4f} +- {r.gain_err:.4f} e-/ADU   "
               f"(header: {rep.header_gain if rep.header_gain is not None else '-'})")
    click.echo(f"read noise {r.readnoise:.3f} +- {r.readnoise_err:.3f} e-       "
               f"(header: {rep.header_readnoise if rep.header_readnoise is not None else '-'})")
    click.echo(f"from {r.n_pairs} flat pair(s) of {len(rep.flats)} flats and "
               f"{len(rep.biases)} biases")
    for w in rep.warnings:
        click.echo(f"crdask: warning: {w}", err=True)
    for _, why in rep.rejected:
        click.echo(f"crdask: error: {why}", err=True)
    ctx.exit(EXIT_SET_ASIDE if rep.rejected else EXIT_OK)


@cli.command("calibrate")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--out-dir", "-o", required=True, type=click.Path(file_okay=False),
              help="Directory for masters and calibrated frames (created if missing).")
@_setup_options
@click.option("--overwrite", is_flag=True,
              help="Start clean: recompute everything (default: finish what is missing).")
@click.pass_context
def calibrate_cmd(ctx, directory, out_dir, hdu, overscan, trim, gain, readnoise, overwrite):
    """Build master bias, dark current and flats (per filter) from DIRECTORY
    and calibrate its science frames to electrons with variance and mask:
    ``crdask run`` with the cosmic-ray step disabled (same ledger, report and
    resume). Frames that cannot be used are set aside with one line each
    (exit 2)."""
    from .pipeline.config import WorkflowError, calibration_workflow

    try:
        wf = calibration_workflow(directory, out_dir, hdu=hdu, overscan=overscan, trim=trim,
                                  gain=gain, readnoise=readnoise)
    except WorkflowError as e:
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)
    result = _run(ctx, wf, restart=overwrite)
    for kind, m in sorted(result.record["masters"].items()):
        click.echo(f"master {kind:<10} {m['path']}")
    ctx.exit(result.exit_code)


def _log(line):
    """Pipeline messages: warnings and errors to stderr, the rest to stdout."""
    click.echo(line, err=line.startswith(("crdask: warning", "crdask: error")))


def _run(ctx, wf, *, restart=False, progress=None, performance_report=None):
    """run_night with the CLI's error handling: one line and exit 1 for a
    cluster, disk or workflow problem."""
    from .io.atomic import OutputWriteError, UnsafeOutputError
    from .io.naming import StemCollisionError
    from .pipeline.cluster import connect
    from .pipeline.config import WorkflowError
    from .pipeline.lock import OutputLocked
    from .pipeline.night import run_night

    handle = None
    try:
        if wf.execution.cluster == "slurm-runner":
            # every srun task runs this; only the client rank returns from
            # connect(), the scheduler and worker ranks serve until it is done
            ex = wf.execution
            handle = connect(kind="slurm-runner", scheduler_file=ex.scheduler_file,
                             threads_per_worker=ex.threads_per_worker,
                             memory_limit=ex.memory_limit, log=click.echo)
        result = run_night(wf, client=handle and handle.client, restart=restart,
                           log=_log, progress=progress,
                           performance_report=performance_report)
    except OutputLocked as e:   # another run owns the folder: touch nothing
        click.echo(str(e))
        ctx.exit(EXIT_OK)
    except (ClusterError, WorkflowError, UnsafeOutputError, StemCollisionError,
            OutputWriteError) as e:
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"crdask: error: {where}{e.strerror or e}", err=True)
        ctx.exit(EXIT_USAGE)
    finally:
        if handle is not None:   # stops the runner's scheduler and workers
            handle.close()
    rec = result.record
    sci = [f for f in rec["frames"] if f.get("type") == "science"]
    n_done = sum(f["status"] == "done" for f in sci)
    n_skip = sum(f["status"] == "skipped" for f in sci)
    click.echo(f"crdask: {n_done} science frame(s) reduced, {n_skip} already done, in "
               f"{rec['seconds']:.1f} s")
    if rec.get("cr_summary"):
        c = rec["cr_summary"]
        click.echo(f"crdask: CR recall {100 * c['recall']:.1f}%, {c['false_positives']} false "
                   f"positive pixels (vs truth, {c['frames']} frames)")
    click.echo(f"crdask: report {result.report_paths.get('md', '')}")
    for f in rec["failures"]:
        click.echo(f"crdask: error: {f['reason']}", err=True)
    return result


@cli.command("run")
@click.argument("workflow", type=click.Path(exists=True, dir_okay=False))
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Address of a running dask.distributed scheduler.")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False),
              help="Scheduler file written by dask-scheduler / dask-jobqueue.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local cluster [default: sized to the machine].")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
              help="Threads per worker.")
@click.option("--memory-limit", default=None, help="Memory limit per worker, e.g. 4GiB.")
@click.option("--processes/--no-processes", default=None,
              help="Local cluster: workers as threads of this process (default: one "
                   "start-up, the kernels release the GIL) or as processes (a worker "
                   "that dies is replaced and its frame retried).")
@click.option("--cluster", default=None, type=click.Choice(CLUSTER_CHOICES),
              help="Cluster to start: local (default), or SLURM/PBS jobs (dask-jobqueue) or "
                   "Kubernetes pods (dask-kubernetes) from Dask's configuration; "
                   "--workers scales it; slurm-runner: every srun task runs crdask, rank 0 "
                   "is the scheduler, rank 1 the client, the others workers.")
@click.option("--restart", is_flag=True,
              help="Forget the ledger and intermediates and start clean.")
@click.option("--dry-run", is_flag=True, help="Print the plan and what is already done; "
                                                "compute nothing.")
@click.option("--performance-report", default=None, type=click.Path(dir_okay=False),
              metavar="FILE.html",
              help="Write Dask's performance report of the run (where the time goes).")
@click.pass_context
def run_cmd(ctx, workflow, scheduler, scheduler_file, workers, threads_per_worker,
            memory_limit, processes, cluster, restart, dry_run, performance_report):
    """Reduce a night as WORKFLOW (YAML) says: masters, calibrated science
    frames, cosmic rays, report. Reruns finish only what is missing."""
    from .pipeline.config import WorkflowError, load_workflow
    from .pipeline.night import plan_night

    overrides = {k: v for k, v in (("scheduler", scheduler), ("scheduler_file", scheduler_file),
                                   ("workers", workers),
                                   ("threads_per_worker", threads_per_worker),
                                   ("memory_limit", memory_limit),
                                   ("processes", processes),
                                   ("cluster", cluster)) if v is not None}
    try:
        wf = load_workflow(workflow)
    except WorkflowError as e:
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)
    if overrides:  # command-line execution settings win over the file's
        wf = dataclasses.replace(wf, execution=dataclasses.replace(wf.execution, **overrides))
    if dry_run:
        from .io.atomic import UnsafeOutputError
        from .io.naming import StemCollisionError
        try:
            plan = plan_night(wf)
        except (WorkflowError, UnsafeOutputError, StemCollisionError) as e:
            click.echo(f"crdask: error: {e}", err=True)
            ctx.exit(EXIT_USAGE)
        click.echo(f"workflow {workflow} -> {wf.output}")
        click.echo(f"{len(plan['catalog'])} input files; masters: {plan['masters']}")
        for label, count in plan["groups"].items():
            click.echo(f"  {count:4d}  {label}")
        for s in plan["science"]:
            group = f"  [{s['group']}]" if s.get("group") else ""
            click.echo(f"  {s['state']:<22} {s['file']}{group}")
        if plan["exposure_groups"]:
            click.echo(f"exposure groups for {wf.cosmics.method}:")
            for label, members in plan["exposure_groups"].items():
                click.echo(f"  {label}: {' '.join(members)}")
        for f in plan["catalog"].unreadable:
            click.echo(f"crdask: error: {f.error}", err=True)
        ctx.exit(EXIT_OK)

    def bar(n, total, s):
        width = 30
        done = int(width * n / max(total, 1))
        click.echo(f"\r[{'#' * done}{'.' * (width - done)}] {n}/{total} {s['file'][:40]:<40}",
                   nl=n == total)
        if s["status"] == "failed":
            click.echo(f"\ncrdask: error: {s['error']}", err=True)

    result = _run(ctx, wf, restart=restart, progress=bar if sys.stdout.isatty() else None,
                  performance_report=performance_report)
    ctx.exit(result.exit_code)
    ctx.exit(result.exit_code)


def main(argv=None):
    """Console-script entry point (``crdask``, ``python -m crdask``): the
    process ends with the command."""
    try:
        return cli.main(args=argv, prog_name="crdask")
    finally:
        # The command is over (outputs written, files closed). Without the
        # freeze, the interpreter's shutdown collections walk every object
        # of numba, LLVM, matplotlib and scipy again: 0.5 s per run,
        # measured. Frozen objects are still freed with the process, and
        # atexit handlers (Dask's, logging's) still run. (Only here, where
        # the process ends: tests call ``cli`` itself.)
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
