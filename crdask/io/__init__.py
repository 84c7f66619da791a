"""FITS input/output, sections, raw frames, the night catalogue and atomic
writes (layer 3: may import only layers 1-2)."""

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
from .raw import RawFrame, open_lazy, read_header, read_raw
from .sections import Section, SectionError, apply_section, header_section, parse_section
from .catalog import (Catalog, ExposureGroup, FrameInfo, Group, KeywordMap, build_catalog,
                      exposure_groups)
from .headers import MergedHeader

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
    "RawFrame",
    "open_lazy",
    "read_header",
    "read_raw",
    "Section",
    "SectionError",
    "apply_section",
    "header_section",
    "parse_section",
    "Catalog",
    "FrameInfo",
    "Group",
    "KeywordMap",
    "build_catalog",
    "ExposureGroup",
    "exposure_groups",
    "MergedHeader",
]
