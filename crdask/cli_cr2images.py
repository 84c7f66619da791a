"""``crdask cr2images``: pair differencing of FITS files (a thin click command).

The lead registers it on the main group (``cli.add_command(cr2images_cmd)``).
Every :func:`crdask.cr2images` parameter is an option with the same name
(dashes for underscores) and default, derived from its ``PARAMS``; regions
are FITS sections (``--image-region '[1:500,20:240]'``,
``--list-skipped-regions '[1:10,1:254];[1000:1024,1:254]'``).

Example
-------
``crdask cr2images a.fits b.fits --out-dir clean/ --tsigma-peak 8``
"""

import time

import click

from .cosmic.cr2images import PARAMS
from .cosmic.params import ParamError
from .io.atomic import OutputExistsError
from .io.fits import FitsInputError
from .pipeline.pairs import clean_pair, validate_pair_params

__all__ = ["cr2images_cmd"]

#: Exit codes as in ``crdask.cli``: 0 all good, 1 usage error, 2 set aside.
EXIT_OK, EXIT_USAGE, EXIT_SET_ASIDE = 0, 1, 2


@click.command("cr2images")
@click.argument("file1", type=click.Path(dir_okay=False))
@click.argument("file2", required=False, type=click.Path(dir_okay=False))
@click.option("--out-dir", "-o", required=True, type=click.Path(file_okay=False),
              help="Directory for the cleaned files (created if missing).")
@PARAMS.click_options()
@click.option("--hdu", default=None,
              help="Image HDU: index or EXTNAME [default: first HDU with 2-D data].")
@click.option("--mask-hdu", default=None,
              help="HDU (index or EXTNAME) of a bad-pixel mask; non-zero = bad.")
@click.option("--suffix", default="_crclean", show_default=True,
              help="Output name: <input stem><suffix>.fits.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def cr2images_cmd(ctx, file1, file2, out_dir, hdu, mask_hdu, suffix, overwrite, **params):
    """Clean cosmic rays by differencing FILE1 and FILE2 (teareduce's cr2images).

    Without FILE2, FILE1 is compared with its own median filter
    (--median-size is then required). Writes OUT_DIR/<stem><suffix>.fits per
    cleaned exposure: the cleaned image (float32, input header, HISTORY
    provenance, CRNFIX) and a MASK extension (uint8, 1 = cosmic ray).
    Inputs are never modified; outputs are written atomically.
    """
    values = PARAMS.option_values(params)
    try:
        values = validate_pair_params(values, single=file2 is None)
    except (TypeError, ValueError) as e:
        raise click.UsageError(f"invalid cr2images parameter: {e}") from None
    t0 = time.perf_counter()
    try:
        results = clean_pair(file1, file2, out_dir, values, hdu=hdu, mask_hdu=mask_hdu,
                             suffix=suffix, overwrite=overwrite)
    except ParamError as e:  # e.g. offsets larger than the images
        raise click.UsageError(f"invalid cr2images parameter: {e}") from None
    except (FitsInputError, OutputExistsError, ValueError) as e:
        click.echo(f"crdask: error: {e}", err=True)
        click.echo("crdask: pair set aside, nothing written", err=True)
        ctx.exit(EXIT_SET_ASIDE)
    except OSError as e:  # e.g. out-dir cannot be created
        click.echo(f"crdask: error: {e}", err=True)
        ctx.exit(EXIT_USAGE)
    for r in results:
        click.echo(f"{r['input']} -> {r['output']}: {r['ncr']} CR pixels")
    click.echo(f"crdask: {len(results)} file(s) cleaned in {time.perf_counter() - t0:.2f} s")
    ctx.exit(EXIT_OK)
