"""``crdask qa``: cosmic-ray completeness by injection (layer 5, thin).

Defines :data:`qa_cmd`, a :class:`click.Command` that the main group in
``crdask/cli.py`` registers (``main.add_command(qa_cmd)``). Parsing and
printing only; the work is :func:`crdask.pipeline.qa.qa_file`.

Exit codes as the rest of the CLI: 0 all good, 1 usage error, 2 some files
set aside (each named on one ``crdask: error:`` line).
"""

import os

import click
import yaml

from .io.fits import FitsInputError
from .io.sections import SectionError
from .cosmic.registry import method_names
from .pipeline.qa import plot_completeness, qa_file, write_report

__all__ = ["qa_cmd"]

EXIT_OK, EXIT_USAGE, EXIT_SET_ASIDE = 0, 1, 2


def _bias(value):
    """``--bias``: a number (ADU) or a FITS section of an overscan strip."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _params(pairs):
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--param expects KEY=VALUE, got {p!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@click.command("qa", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(method_names("frame")), default="lacosmic",
              show_default=True, help="CR method whose completeness is measured.")
@click.option("--param", "param", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the method (repeatable), e.g. --param sigclip=5; "
                   "default: the method's own defaults (astroscrappy's for lacosmic).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the injected events.")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Events per frame [default: 100 per 512x512 px].")
@click.option("--snr-min", type=click.FloatRange(min=0, min_open=True), default=3.0,
              show_default=True, help="Lowest injected peak S/N.")
@click.option("--snr-max", type=click.FloatRange(min=0, min_open=True), default=100.0,
              show_default=True, help="Highest injected peak S/N.")
@click.option("--border", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep events off the outermost BORDER rows/columns.")
@click.option("--out-dir", type=click.Path(file_okay=False), default="qa",
              show_default=True, help="Where completeness.json and completeness.png go.")
@click.option("--hdu", default=None, help="Image HDU (index or EXTNAME).")
@click.option("--gain", type=float, default=None, help="e-/ADU [default: header].")
@click.option("--readnoise", type=float, default=None, help="e- [default: header].")
@click.option("--gain-key", default="GAIN", show_default=True)
@click.option("--readnoise-key", default="RDNOISE,READNOIS", show_default=True,
              help="Comma-separated keywords tried in order.")
@click.option("--bias", default=None,
              help="Bias level in ADU, or an overscan strip '[x1:x2,y1:y2]' whose "
                   "per-row median is subtracted [default: none].")
@click.option("--trim", default=None, help="Section kept after the bias step.")
@click.pass_context
def qa_cmd(ctx, files, method, param, seed, n, snr_min, snr_max, border, out_dir, hdu,
           gain, readnoise, gain_key, readnoise_key, bias, trim):
    """Measure CR completeness on FILE(s) by injecting synthetic cosmic rays.

    Each frame is brought to electrons, the method is run on it as it is and
    on a copy with injected CRs (known positions, peak S/N from --snr-min to
    --snr-max); prints the recall above 10 sigma and the extra false pixels,
    and writes OUT_DIR/completeness.json and completeness.png (plot extra).
    """
    if snr_min > snr_max:
        raise click.UsageError("--snr-min must not exceed --snr-max")
    params = _params(param)
    reports, failed = [], []
    for path in files:
        try:
            rep = qa_file(path, method=method, params=params, seed=seed, hdu=hdu,
                          gain=gain, readnoise=readnoise, gain_key=gain_key,
                          readnoise_key=tuple(k.strip() for k in readnoise_key.split(",")),
                          bias=_bias(bias), trim=trim, n=n, snr_range=(snr_min, snr_max),
                          border=border)
        except (FitsInputError, SectionError) as e:
            click.echo(f"crdask: error: {e}", err=True)
            failed.append(path)
            continue
        except (TypeError, ValueError) as e:
            click.echo(f"crdask: error: {path}: {' '.join(str(e).split())}", err=True)
            failed.append(path)
            continue
        reports.append(rep)
        r10 = rep.recall_above.get("10")
        r10 = "n/a" if r10 != r10 else f"{r10:.3f}"
        n10 = sum(k for k, e in zip(rep.n_events, rep.bins) if e >= 10)
        click.echo(f"{path}: {rep.n_injected} CRs injected; recall (S/N >= 10) {r10} of "
                   f"{n10}; extra false pixels {rep.extra_false_pixels} "
                   f"({rep.extra_false_pixels_far} away from injected CRs)")
    if reports:
        js = write_report(reports, out_dir)
        png = plot_completeness(reports, os.path.join(out_dir, "completeness.png"))
        click.echo(f"wrote {js}" + (f" and {png}" if png else
                                    " (no PNG: install the 'plot' extra)"))
    if failed:
        click.echo(f"crdask: {len(failed)} file(s) set aside: {', '.join(failed)}", err=True)
        ctx.exit(EXIT_SET_ASIDE)
    ctx.exit(EXIT_OK)
