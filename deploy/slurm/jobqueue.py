"""Reduce a night on SLURM through dask-jobqueue (pip install dask-jobqueue).

    python deploy/slurm/jobqueue.py night.yaml
"""
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

import crdask

cluster = SLURMCluster(cores=4, processes=1, memory="16GiB", walltime="04:00:00")
cluster.scale(jobs=8)                      # 8 workers of 4 threads
with Client(cluster) as client:
    result = crdask.run_night(sys.argv[1], client=client)
sys.exit(result.exit_code)
