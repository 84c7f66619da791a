"""L.A.Cosmic graphs on a real LocalCluster with two worker processes."""

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

from crdask import lacosmic
from crdask.simulate import simulate_frame


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.mark.parametrize("cleantype", ["meanmask", "median"])
def test_cluster_result_equals_numpy(client, cleantype):
    sim = simulate_frame(shape=(400, 360), seed=8)
    kw = dict(gain=sim.gain, readnoise=sim.readnoise, satlevel=sim.satlevel * sim.gain,
              cleantype=cleantype)
    ref_mask, ref_clean = lacosmic(sim.data, num_threads=1, **kw)
    arr = da.from_array(sim.data, chunks=(130, 170))
    mask, clean = lacosmic(arr, **kw)
    futures = client.compute([mask, clean])
    got_mask, got_clean = client.gather(futures)
    # both worker processes took part
    who = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count)
    assert len(who) == 2 and all(v > 0 for v in who.values())
    np.testing.assert_array_equal(got_mask, ref_mask)
    np.testing.assert_array_equal(got_clean, ref_clean)
