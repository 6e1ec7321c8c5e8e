"""Host side of the cluster launch (``pagedawq.kernels.clusters``); the kernels' cluster epilogue is
checked in SASS (test_awq_wgmma_t.py) and on the GPU."""
import pytest

from pagedawq.kernels.clusters import CLUSTER_SIZES, launch_clustered

def test_cluster_sizes_other_than_the_portable_ones_are_refused():
    assert CLUSTER_SIZES == (2, 4, 8)
    with pytest.raises(ValueError, match="cluster size 3"):
        launch_clustered(None, (1, 1, 1), 3, 0, None)
