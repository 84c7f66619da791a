"""``crdask crmasks PARAMS.yaml``: numina-crmasks' YAML in, its products out (layer 5).

Thin: parse, call :func:`crdask.pipeline.crmasks.run_crmasks`, print. The
lead registers :data:`crmasks_cmd` on the ``crdask`` group.

Example
-------
``crdask crmasks params.yaml --output-dir out/ --no-plots``
"""

from __future__ import annotations

import json
import sys

import click

__all__ = ["crmasks_cmd"]

EXIT_OK, EXIT_USAGE = 0, 1


@click.command("crmasks")
@click.argument("params_yaml", type=click.Path(dir_okay=False))
@click.option("--output-dir", "--output_dir", "output_dir", default=".", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder for the products (created); --output_dir as numina-crmasks.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write the PNGs of the diagram and of the features.")
@click.option("--chunks", type=int, default=None,
              help="Run the per-pixel work on Dask chunks of this side (px).")
@click.option("--threads", "num_threads", type=click.IntRange(min=1), default=None,
              help="Threads per L.A.Cosmic run (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
def crmasks_cmd(params_yaml, output_dir, plots, chunks, num_threads, as_json):
    """Median-Minimum cosmic-ray masks of 3 or more equivalent exposures from
    numina-crmasks' PARAMS_YAML (unchanged): crmasks.fits, combined_*.fits,
    feature tables and diagram PNGs, as numina-crmasks names them. Never
    waits for input."""
    from .pipeline.crmasks import CrmasksError, run_crmasks

    def warn(msg):
        click.echo(msg, err=True)
    try:
        s = run_crmasks(params_yaml, output_dir, plots=plots, num_threads=num_threads,
                        chunks=(chunks, chunks) if chunks else None, log=warn)
    except CrmasksError as e:
        click.echo(f"crdask: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(s))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in s["masks"].items())
        click.echo(f"masked pixels: {counts}")
        click.echo(f"{len(s['files'])} files in {output_dir} ({s['seconds']:.1f} s)")
    sys.exit(EXIT_OK)
