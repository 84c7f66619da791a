"""``crdask demo`` and ``crdask simulate``: simulated nights with the truth kept apart (layer 5).

Registered on the main group by :mod:`crdask.cli`.
"""

import time

import click

from ._version import __version__

__all__ = ["demo", "simulate_grp"]


@click.command("demo")
@click.argument("directory", required=False, default="crdask-demo",
                type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=64), default=512, show_default=True,
              help="Side of the simulated square frames, pixels.")
@click.option("--science", type=click.IntRange(min=1), default=6, show_default=True,
              help="Number of science frames in the simulated night.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed of the simulation.")
@click.option("--frame", is_flag=True,
              help="Instead: clean one simulated frame and compare with astroscrappy.")
@click.pass_context
def demo(ctx, directory, size, science, seed, frame):
    """Simulate a small night in DIRECTORY (default ./crdask-demo), reduce it
    with the full workflow on a local Dask cluster, and print where the
    outputs and the report are, with CR recall against the known truth."""
    if frame:
        _demo_frame(size, seed)
        return
    from pathlib import Path

    from .pipeline.night import run_night
    from .simulate import write_night

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    raw = root / "raw"
    if not raw.exists():
        m = write_night(raw, shape=(size, size), n_bias=5, dark_times=(60, 300), n_dark=3,
                        filters=("V", "R"), n_flat=4, n_science=science, seed=seed)
        click.echo(f"simulated night: {len(m.files)} raw files in {raw} (truth in "
                   f"{m.truth_dir})")
    wf_path = root / "night.yaml"
    wf_path.write_text("# crdask demo workflow (see workflows/night.yaml for every key)\n"
                       "version: 1\ninputs:\n  directory: raw\noutput: out\n"
                       "truth: raw_truth\n")
    result = run_night(str(wf_path), log=click.echo)
    rec = result.record
    sci = [f for f in rec["frames"] if f.get("type") == "science"]
    sch = rec["scheduler"]
    click.echo(f"reduced {len(sci)} science frames in {rec['seconds']:.1f} s "
               f"({sch['task_slots']} frame(s) at a time on "
               f"{sch['workers']} worker(s))")
    if rec.get("cr_summary"):
        c = rec["cr_summary"]
        click.echo(f"cosmic rays vs truth: recall {100 * c['recall']:.1f}%, "
                   f"{c['false_positives']} false-positive pixels "
                   f"({c['n_found']} flagged, {c['n_true']} true)")
    click.echo(f"outputs: {root / 'out'}")
    for kind, path in sorted(result.report_paths.items()):
        if isinstance(path, (str, Path)):
            click.echo(f"report ({kind}): {path}")
    ctx.exit(result.exit_code)


def _demo_frame(size, seed):
    """Simulate one frame with known cosmic rays, clean it, and score the
    result (against astroscrappy too, if installed)."""
    import numpy as np

    from .cosmic import lacosmic
    from .simulate import score, simulate_frame

    frame = simulate_frame(shape=(size, size), seed=seed)
    kw = {"gain": frame.gain, "readnoise": frame.readnoise,
          "satlevel": frame.satlevel * frame.gain}  # satlevel in e-, as astroscrappy
    truth = np.asarray(frame.crmask, bool)
    click.echo(f"simulated {size}x{size} frame (seed {seed}): {int(truth.sum())} CR pixels; "
               f"gain {frame.gain:g} e-/ADU, read noise {frame.readnoise:g} e-, "
               f"saturation {frame.satlevel:g} ADU")
    lacosmic(frame.data[:64, :64], **kw)  # warm-up: load the compiled kernels

    def line(name, seconds, s):
        return (f"  {name:<20} {seconds:7.2f} s   recall {100 * s['recall']:5.1f}%   "
                f"false positives {s['false_positives']:5d}   "
                f"precision {100 * s['precision']:5.1f}%")

    t = time.perf_counter()
    crmask, _ = lacosmic(frame.data, **kw)
    t_crdask = time.perf_counter() - t
    click.echo(line(f"crdask {__version__}", t_crdask, score(crmask, truth)))
    try:
        import astroscrappy
    except ImportError:
        click.echo("  (astroscrappy not installed: no comparison)")
        return
    t = time.perf_counter()
    mask2, _ = astroscrappy.detect_cosmics(frame.data, **kw)
    t_astro = time.perf_counter() - t
    version = getattr(astroscrappy, "__version__", "")
    click.echo(line(f"astroscrappy {version}", t_astro, score(mask2, truth)))
    agree = int(np.count_nonzero(np.asarray(mask2, bool) != crmask))
    click.echo(f"  crdask is {t_astro / t_crdask:.1f}x faster; the masks differ in "
               f"{agree} pixel(s)")


@click.group("simulate")
def simulate_grp():
    """Write simulated data (with the truth kept apart)."""


@simulate_grp.command("night")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=64), default=2048, show_default=True,
              help="Side of the square imaging area, pixels.")
@click.option("--bias", "n_bias", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--darks", "n_dark", type=click.IntRange(min=0), default=5, show_default=True,
              help="Darks per exposure time.")
@click.option("--dark-times", default="60,300", show_default=True,
              help="Comma-separated dark exposure times, s.")
@click.option("--filters", default="V,R", show_default=True, help="Comma-separated filters.")
@click.option("--flats", "n_flat", type=click.IntRange(min=0), default=7, show_default=True,
              help="Flats per filter.")
@click.option("--science", "n_science", type=click.IntRange(min=0), default=20,
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--layout", type=click.Choice(["groups", "pairs"]), default="groups",
              show_default=True, help="Science exposures in groups of 3-5 or in pairs.")
@click.option("--format", "fmt", type=click.Choice(["single", "mef", "gzip", "fpack"]),
              default="single", show_default=True, help="File format of the raw frames.")
@click.option("--double-hits", type=click.IntRange(min=0), default=0, show_default=True,
              help="CR events at the same pixels in 2 members of each group.")
@click.option("--amplifiers", type=click.IntRange(1, 2), default=1, show_default=True,
              help="Amplifiers read out (2: each half with its own overscan).")
@click.option("--mode", type=click.Choice(["imaging", "spectroscopy"]), default="imaging",
              show_default=True, help="spectroscopy: a long-slit night (lamp flats, arcs).")
@click.option("--overwrite", is_flag=True)
def simulate_night_cmd(directory, size, n_bias, n_dark, dark_times, filters, n_flat,
                       n_science, seed, layout, fmt, double_hits, amplifiers, mode,
                       overwrite):
    """Write a raw night into DIRECTORY; the truth (CR masks, detector)
    goes to DIRECTORY_truth, never into the raw files."""
    from .simulate import simulate_longslit_night, write_night

    if mode == "spectroscopy":
        m = simulate_longslit_night(directory, shape=(size, size), n_bias=n_bias,
                                    n_flat=n_flat, n_science=n_science, seed=seed,
                                    format=fmt, amplifiers=amplifiers, overwrite=overwrite)
    else:
        m = write_night(directory, shape=(size, size), n_bias=n_bias, n_dark=n_dark,
                        dark_times=tuple(float(t) for t in dark_times.split(",") if t),
                        filters=tuple(f for f in filters.split(",") if f), n_flat=n_flat,
                        n_science=n_science, seed=seed, overwrite=overwrite,
                        layout=layout, format=fmt, double_hits=double_hits,
                        amplifiers=amplifiers)
    click.echo(f"{len(m.files)} raw files in {m.directory}; truth in {m.truth_dir} "
               f"({m.elapsed_s:.1f} s)")
