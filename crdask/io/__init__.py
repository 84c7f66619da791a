"""FITS input/output and atomic writes (layer 3: may import only layers 1-2)."""

from .atomic import OutputExistsError, atomic_open, is_temp_name, temp_name_for
from .fits import (
    FitsInputError,
    ImageInput,
    header_number,
    history_lines,
    output_header,
    parse_hdu,
    read_image,
    write_fits_atomic,
)

__all__ = [
    "OutputExistsError",
    "atomic_open",
    "is_temp_name",
    "temp_name_for",
    "FitsInputError",
    "ImageInput",
    "header_number",
    "history_lines",
    "output_header",
    "parse_hdu",
    "read_image",
    "write_fits_atomic",
]
