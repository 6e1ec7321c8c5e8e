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
        compiled._run = "stock launcher"
        compiled._init_handles = lambda: setattr(compiled, "handles", True)
        self.compiled = compiled
        return compiled

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((grid, args, kwargs))


def test_a_specialisation_is_prepared_once_then_launched_with_one_dispatch(monkeypatch):
    import torch

    from pagedawq.kernels import clusters
    monkeypatch.setattr(clusters, "_smem_optin", lambda index: 227 * 1024)
    monkeypatch.setattr(clusters, "_OFFSETS", {})
    monkeypatch.setattr(clusters, "SCHEDULING_POLICY", "spread")   # Triton's launcher: a fake kernel has no source
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
    # an int and a bool of equal value may specialise differently; a NaN is prepared once
    for args, warmups in [((x, 1), 1), ((x, True), 1), ((x, float("nan")), 1), ((x, float("nan")), 0)]:
        before = kernel.warmups
        assert launch_clustered(kernel, (10, 1, 1), 4, 2048, device, *args, STAGES=2)
        assert kernel.warmups == before + warmups, args


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


def test_a_prepared_kernel_launches_through_a_launcher_asking_for_the_chosen_policy(monkeypatch):
    import torch

    from pagedawq.kernels import clusters
    monkeypatch.setattr(clusters, "_smem_optin", lambda index: 227 * 1024)
    monkeypatch.setattr(clusters, "_OFFSETS", {})
    asked = []

    def launcher_with_policy(compiled, policy):
        assert compiled.handles   # the stock launcher is made (and the binary loaded) first
        asked.append(policy)
        return f"{policy} launcher"

    monkeypatch.setattr(clusters, "_launcher_with_policy", launcher_with_policy)
    assert clusters.SCHEDULING_POLICY == "load_balancing"
    kernel = _FakeKernel(shared=1024)
    assert launch_clustered(kernel, (2, 1, 1), 2, 256, torch.device("cuda", 0), torch.zeros(8))
    assert asked == ["load_balancing"] and kernel.compiled._run == "load_balancing launcher"
    # Triton's own policy keeps Triton's own launcher
    monkeypatch.setattr(clusters, "SCHEDULING_POLICY", "spread")
    kernel = _FakeKernel(shared=1024)
    assert launch_clustered(kernel, (2, 1, 1), 2, 256, torch.device("cuda", 0), torch.zeros(8))
    assert asked == ["load_balancing"] and kernel.compiled._run == "stock launcher"


class _FakeDriver:
    """``driver.active.launcher_cls`` that, like Triton 3.6's CudaLauncher, builds its source with
    the NVIDIA backend's ``make_launcher`` (here it returns that source)."""

    def __init__(self, nvidia_driver) -> None:
        self.active = self
        self.nvidia_driver = nvidia_driver

    def launcher_cls(self, src, metadata):
        return self.nvidia_driver.make_launcher({}, src, None)


def test_the_launcher_is_tritons_own_source_with_the_policy_replaced(monkeypatch):
    from triton.backends.nvidia import driver as nvidia_driver

    from pagedawq.kernels import clusters
    source = "attr.value.clusterSchedulingPolicyPreference = CU_CLUSTER_SCHEDULING_POLICY_SPREAD; /* {} */"

    def stock(constants, signature, tensordesc_meta):
        return source.format(signature)

    monkeypatch.setattr(nvidia_driver, "make_launcher", stock, raising=False)
    monkeypatch.setattr(clusters, "driver", _FakeDriver(nvidia_driver))
    compiled = type("Compiled", (), {"src": "sig", "metadata": None})()
    made = clusters._launcher_with_policy(compiled, "load_balancing")
    assert made == source.replace("SPREAD", "LOAD_BALANCING").format("sig")
    assert clusters._launcher_with_policy(compiled, "default").endswith("POLICY_DEFAULT; /* sig */")
    assert nvidia_driver.make_launcher is stock   # put back for every other kernel
    with pytest.raises(ValueError, match="'balanced' is not one of"):
        clusters._launcher_with_policy(compiled, "balanced")


def test_a_triton_whose_launcher_does_not_name_the_policy_keeps_its_own(monkeypatch, caplog):
    from triton.backends.nvidia import driver as nvidia_driver

    from pagedawq.kernels import clusters
    clusters._warn_once.cache_clear()
    monkeypatch.setattr(clusters, "driver", _FakeDriver(nvidia_driver))
    compiled = type("Compiled", (), {"src": "sig", "metadata": None})()
    monkeypatch.setattr(nvidia_driver, "make_launcher", lambda *args: "no policy here", raising=False)
    assert clusters._launcher_with_policy(compiled, "load_balancing") is None
    assert clusters._launcher_with_policy(compiled, "default") is None   # the same warning: logged once
    monkeypatch.delattr(nvidia_driver, "make_launcher")   # newer Tritons (3.9): one launcher for all kernels
    assert clusters._launcher_with_policy(compiled, "load_balancing") is None
    assert [r.message for r in caplog.records if r.name == clusters.__name__] == [
        "this Triton's launcher does not name CU_CLUSTER_SCHEDULING_POLICY_SPREAD once; clusters launch with its "
        "own policy",
        "this Triton builds no launcher source per kernel; clusters launch with its own policy"]
