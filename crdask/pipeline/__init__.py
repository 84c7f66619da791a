"""Pipelines: build and run the work for many files on a scheduler (layer 4).

May import :mod:`crdask.io` and the algorithm layers, never :mod:`crdask.cli`.
"""

from .clean_files import (
    LACOSMIC_DEFAULTS,
    ClusterError,
    clean_files,
    clean_one,
    local_cluster_size,
    output_name,
    plan_outputs,
    validate_params,
)

__all__ = [
    "LACOSMIC_DEFAULTS",
    "ClusterError",
    "clean_files",
    "clean_one",
    "local_cluster_size",
    "output_name",
    "plan_outputs",
    "validate_params",
]
