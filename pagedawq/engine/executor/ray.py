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
import secrets
import socket
from collections.abc import Sequence
from typing import Any

import torch

from pagedawq.config import ConfigError, EngineConfig
from pagedawq.engine.executor.base import Executor
from pagedawq.engine.executor.step_channel import STOP, DriverChannel, serve_worker
from pagedawq.engine.model_runner import ModelRunnerOutput
from pagedawq.engine.scheduler import SchedulerOutput
from pagedawq.errors import EngineDeadError

logger = logging.getLogger(__name__)

# Variables the workers must see as the driver does (NCCL safety switches, debugging, kernels).
_FORWARDED_ENV_PREFIXES = ("NCCL_", "TORCH_", "NVSHMEM_", "PAGEDAWQ_", "TRITON_", "CUDA_LAUNCH_BLOCKING", "GLOO_")


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("tensor_parallel_size > 1 runs its workers with Ray, which is not installed: "
                          "pip install 'pagedawq[ray]' (or 'ray')") from e
    return ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        from pagedawq.engine.worker import Worker
        local_rank = 0
        if config.device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.parallel.tensor_parallel_size))
        else:
            local_rank = _assigned_gpu_index()
        self.worker = Worker(config, rank=rank, local_rank=local_rank, distributed_init_method=init_method)
        self.worker.init_device()
        self.worker.load_model()
        return os.getpid()

    def execute(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.worker, method)(*args, **kwargs)

    def serve(self, address: tuple[str, int], rank: int, token: str) -> None:
        """Run commands from the driver's channel until it stops or goes away."""
        serve_worker(address, rank, token, self.execute)


class _LaunchedStep:
    """Handle of a step launched on the Ray workers; ``result()`` is its ModelRunnerOutput."""

    def __init__(self, executor: "RayExecutor") -> None:
        self.executor = executor
        self.output: ModelRunnerOutput | None = None
        self.done = False

    def resolve(self, output: ModelRunnerOutput) -> None:
        self.output, self.done = output, True

    def result(self) -> ModelRunnerOutput:
        if not self.done:
            self.executor._flush(self)
        return self.output


class RayExecutor(Executor):
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
        self.channel: DriverChannel | None = None
        self.loop_refs: list = []
        self._outstanding: _LaunchedStep | None = None
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
            init_method = f"tcp://127.0.0.1:{_free_port()}"
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
        token = secrets.token_hex(16)
        self.channel = DriverChannel(len(self.workers), host, token)
        self.loop_refs = [w.serve.remote(self.channel.address, rank, token) for rank, w in enumerate(self.workers)]
        self.channel.accept_all(timeout_s=120.0, still_starting=self._check_alive)

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

    def collective_rpc(self, method: str, args: tuple = (), kwargs: dict[str, Any] | None = None,
                       reply_ranks: Sequence[int] | None = None) -> list[Any]:
        if self.channel is None:
            raise EngineDeadError("the Ray workers have been shut down")
        ranks = tuple(range(len(self.workers))) if reply_ranks is None else tuple(reply_ranks)
        self.channel.broadcast((method, args, kwargs or {}, ranks))
        replies = self.channel.gather(ranks, self._check_alive)
        return [replies[r] for r in ranks]

    # ---- asynchronous scheduling (the default on CUDA) -----------------------------------------
    def launch_model(self, sched: SchedulerOutput) -> "_LaunchedStep":
        """Launch ``sched`` on every rank. Rank 0 answers with the previous step's tokens, which
        resolve that step's handle; the new step's handle resolves with the next launch or, if
        none comes first, with a flush."""
        previous, self._outstanding = self._outstanding, _LaunchedStep(self)
        (reply,) = self.collective_rpc("launch_model", (sched,), reply_ranks=(0,))
        if previous is not None:
            previous.resolve(reply)
        return self._outstanding

    def _flush(self, step: "_LaunchedStep") -> None:
        if step is not self._outstanding:
            raise RuntimeError("a launched step was neither resolved nor the last one launched")
        self._outstanding = None
        (reply,) = self.collective_rpc("flush_model", reply_ranks=(0,))
        step.resolve(reply)

    def shutdown(self) -> None:
        ray = getattr(self, "ray", None)
        if ray is None or not ray.is_initialized():
            return
        channel, self.channel = getattr(self, "channel", None), None
        if channel is not None:
            try:
                channel.broadcast((STOP, (), {}, ()))
            except EngineDeadError:
                pass   # a rank is already gone; the kills below end the others
            channel.close()
        for w in getattr(self, "workers", []):
            ray.kill(w)
        self.workers = []
        if getattr(self, "placement_group", None) is not None:
            from ray.util.placement_group import remove_placement_group
            remove_placement_group(self.placement_group)
            self.placement_group = None
