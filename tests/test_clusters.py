"""Host side of the cluster launch (``pagedawq.kernels.clusters``); the kernels' cluster epilogue is
checked in SASS (test_awq_wgmma_t.py) and on the GPU."""
import pytest

from pagedawq.kernels.clusters import CLUSTER_SIZES, launch_clustered

def test_cluster_sizes_other_than_the_portable_ones_are_refused():
    assert CLUSTER_SIZES == (2, 4, 8)
    with pytest.raises(ValueError, match="cluster size 3"):
        launch_clustered(None, (1, 1, 1), 3, 0, None)


class _FakeKernel:
    """Records warmups and launches; its compiled kernel uses ``shared`` bytes of shared memory."""

    def __init__(self, shared: int) -> None:
        self.shared, self.warmups, self.launches = shared, 0, []

    def warmup(self, *args, grid, cluster_smem, **kwargs):
        self.warmups += 1
        compiled = type("Compiled", (), {})()
        compiled.metadata = type("Meta", (), {"shared": self.shared})()
        compiled.packed_metadata = (4, 1, self.shared)
        self.compiled = compiled
        return compiled

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((grid, args, kwargs))


def test_a_specialisation_is_prepared_once_then_launched_with_one_dispatch(monkeypatch):
    import torch

    from pagedawq.kernels import clusters
    monkeypatch.setattr(clusters, "_smem_optin", lambda index: 227 * 1024)
    monkeypatch.setattr(clusters, "_OFFSETS", {})
    kernel, device = _FakeKernel(shared=60000), torch.device("cuda", 0)
    x = torch.zeros(64, 32)
    for _ in range(3):
        assert launch_clustered(kernel, (10, 1, 1), 4, 2048, device, x, 7, STAGES=2)
    assert kernel.warmups == 1 and len(kernel.launches) == 3
    assert kernel.compiled.packed_metadata == (4, 4, 60000 + 2048)   # 60000 is already 16-byte aligned
    assert all(launch[2]["cluster_smem"] == 60000 for launch in kernel.launches)
    # anything that may change Triton's specialisation prepares again: a constexpr, an int, a shape,
    # a dtype, a 16-byte misaligned tensor
    for args, kwargs in [((x, 7), {"STAGES": 3}), ((x, 8), {"STAGES": 2}), ((torch.zeros(64, 16), 7), {"STAGES": 2}),
                         ((x.half(), 7), {"STAGES": 2}), ((torch.zeros(65)[1:].view(64, 1), 7), {"STAGES": 2})]:
        before = kernel.warmups
        assert launch_clustered(kernel, (10, 1, 1), 4, 2048, device, *args, **kwargs)
        assert kernel.warmups == before + 1, (args, kwargs)


def test_a_launch_that_cannot_have_its_cluster_memory_is_refused_every_time(monkeypatch):
    import torch

    from pagedawq.kernels import clusters
    monkeypatch.setattr(clusters, "_smem_optin", lambda index: 227 * 1024)
    monkeypatch.setattr(clusters, "_OFFSETS", {})
    kernel = _FakeKernel(shared=226 * 1024)
    for _ in range(2):
        assert not launch_clustered(kernel, (10, 1, 1), 2, 4096, torch.device("cuda", 0), torch.zeros(8))
    assert kernel.warmups == 1 and not kernel.launches
    assert kernel.compiled.packed_metadata == (4, 1, 226 * 1024)   # left as compiled
