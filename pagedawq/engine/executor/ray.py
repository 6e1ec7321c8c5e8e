"""Tensor parallelism over Ray: one actor per rank, the scheduler stays in the driver.

Ray reserves the devices (a placement group, one GPU bundle per rank), starts one actor per rank
and loads the shards. After that each actor sits in a :mod:`step_channel` loop: every step the
driver writes the same small SchedulerOutput to all ranks over a socket, the ranks run their
shards in lock step (NCCL on GPU, gloo on CPU) and rank 0 alone writes back the sampled tokens.
Going around Ray's task path for the per-step traffic is what keeps batch-1 latency low; a dead
actor still surfaces as :class:`EngineDeadError` (its socket closes, and Ray reports the actor's
loop as failed), never as a hang.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from pagedawq.config import ConfigError, EngineConfig
from pagedawq.engine.executor.channel_executor import ChannelExecutor, build_rank_worker, free_port
from pagedawq.engine.executor.step_channel import serve_worker
from pagedawq.errors import EngineDeadError

logger = logging.getLogger(__name__)

# Variables the workers must see as the driver does (NCCL safety switches, debugging, kernels).
_FORWARDED_ENV_PREFIXES = ("NCCL_", "TORCH_", "NVSHMEM_", "PAGEDAWQ_", "TRITON_", "CUDA_LAUNCH_BLOCKING", "GLOO_")


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("tensor_parallel_size > 1 runs its workers with Ray, which is not installed: "
                          "pip install 'pagedawq[ray]' (or 'ray'), or pass distributed_executor_backend='mp' "
                          "for one machine without Ray") from e
    return ray


def _assigned_gpu_index() -> int:
    """This actor's GPU as an index into the devices the process sees. The actors are started
    with Ray's CUDA_VISIBLE_DEVICES rewriting turned off, so every rank sees every GPU under its
    real index; symmetric-memory peers must not all call their GPU "cuda:0"."""
    import ray
    gpu = str(ray.get_gpu_ids()[0])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",").index(gpu) if visible else int(gpu)


class RayWorkerWrapper:
    """The actor body: builds a Worker lazily, then runs any of its methods by name."""

    def __init__(self) -> None:
        self.worker = None

    def init_worker(self, config: EngineConfig, rank: int, init_method: str) -> int:
        local_rank = _assigned_gpu_index() if config.device == "cuda" else 0
        self.worker = build_rank_worker(config, rank, local_rank, init_method)
        return os.getpid()

    def execute(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.worker, method)(*args, **kwargs)

    def serve(self, address: tuple[str, int], rank: int, token: str) -> None:
        """Run commands from the driver's channel until it stops or goes away."""
        serve_worker(address, rank, token, self.execute)


class RayExecutor(ChannelExecutor):
    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        ray = self.ray = _import_ray()
        tp = config.parallel.tensor_parallel_size
        use_gpu = config.device == "cuda"
        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}
        if not ray.is_initialized():
            ray.init(num_cpus=max(os.cpu_count() or 1, tp), include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": env})
        self.workers: list = []
        self.placement_group = None
        self.loop_refs: list = []
        try:
            actor_cls = ray.remote(RayWorkerWrapper)
            if use_gpu:
                # One GPU bundle per rank, packed on as few nodes as possible.
                from ray.util.placement_group import placement_group
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
                self.placement_group = placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="PACK")
                ready, _ = ray.wait([self.placement_group.ready()], timeout=60)
                if not ready:
                    raise ConfigError(f"Ray could not reserve {tp} GPUs within 60 s (cluster has "
                                      f"{ray.cluster_resources()}); lower tensor_parallel_size")
                options = [dict(num_cpus=1, num_gpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.placement_group, placement_group_bundle_index=rank)) for rank in range(tp)]
                env = {**env, "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
            else:
                # CPU ranks share the host's cores (gloo); they reserve no Ray resources.
                options = [dict(num_cpus=0)] * tp
            self.workers = [actor_cls.options(runtime_env={"env_vars": env}, **opt).remote() for opt in options]
            init_method = f"tcp://127.0.0.1:{free_port()}"
            pids = self._gather([w.init_worker.remote(config, rank, init_method) for rank, w in enumerate(self.workers)])
            logger.info("started %d Ray workers (pids %s) for tensor parallelism", tp, pids)
            self._open_channel()
        except BaseException:
            self.shutdown()
            raise

    def _gather(self, refs: list) -> list[Any]:
        """Results in rank order; the first failure is raised as soon as it is known."""
        ray = self.ray
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    results[index[ref]] = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    raise EngineDeadError(f"a tensor-parallel worker died: {e}") from e
        return results

    def _open_channel(self) -> None:
        ray = self.ray
        # Loopback when every rank is on this node (the common case); else this node's address.
        single_node = sum(1 for n in ray.nodes() if n.get("Alive")) <= 1
        host = "127.0.0.1" if single_node else ray.util.get_node_ip_address()
        token = self._make_channel(len(self.workers), host)
        self.loop_refs = [w.serve.remote(self.channel.address, rank, token) for rank, w in enumerate(self.workers)]
        self._await_ranks()

    def _check_alive(self) -> None:
        """Raise if any rank's command loop has ended (it only ends on STOP or on death)."""
        ray = self.ray
        done, _ = ray.wait(self.loop_refs, num_returns=len(self.loop_refs), timeout=0)
        for ref in done:
            rank = self.loop_refs.index(ref)
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                raise EngineDeadError(f"a tensor-parallel worker died (rank {rank}): {e}") from e
            raise EngineDeadError(f"a tensor-parallel worker died (rank {rank} left its command loop)")

    def shutdown(self) -> None:
        """Stop the workers and free their placement group. Also runs from a finalizer while the
        process is being terminated, when Ray's own connection may already be closing: Ray errors
        here are logged, not raised (the cluster goes away with the process)."""
        ray = getattr(self, "ray", None)
        if ray is None or not ray.is_initialized():
            return
        self._close_channel()
        from ray.util.placement_group import remove_placement_group
        workers, self.workers = getattr(self, "workers", []), []
        group, self.placement_group = getattr(self, "placement_group", None), None
        steps = [lambda w=w: ray.kill(w) for w in workers]
        if group is not None:
            steps.append(lambda: remove_placement_group(group))
        for step in steps:   # each one tried, whatever the others did
            try:
                step()
            except ray.exceptions.RayError as e:
                logger.warning("Ray shutdown of the tensor-parallel workers was incomplete: %s", e)
