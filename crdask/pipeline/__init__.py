"""Pipelines: build and run the work for many files on a scheduler (layer 4).

May import :mod:`crdask.io` and the algorithm layers, never :mod:`crdask.cli`.
"""

from .clean_files import clean_files, clean_one, output_name, plan_outputs, validate_params
from .cluster import ClusterError, connect, local_cluster_size

__all__ = [
    "ClusterError",
    "clean_files",
    "clean_one",
    "connect",
    "local_cluster_size",
    "output_name",
    "plan_outputs",
    "validate_params",
]
