"""Executors run the same Worker methods on every tensor-parallel rank.

``collective_rpc(method, args)`` calls ``Worker.<method>`` on all ranks and returns the results of
the ranks asked to reply (all by default), in rank order; the engine never talks to a worker
directly. A step only needs rank 0's sampled tokens, so ``execute_model`` asks rank 0 alone.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from pagedawq.config import ConfigError, EngineConfig
from pagedawq.engine.model_runner import ModelRunnerOutput
from pagedawq.engine.scheduler import SchedulerOutput


class Executor(ABC):
    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @abstractmethod
    def collective_rpc(self, method: str, args: tuple = (), kwargs: dict[str, Any] | None = None,
                       reply_ranks: Sequence[int] | None = None) -> list[Any]:
        """Run ``Worker.method(*args, **kwargs)`` on every rank; the results of ``reply_ranks``
        (every rank when None) in rank order."""

    def determine_num_blocks(self) -> int:
        # Every rank must hold the same number of blocks: take the smallest.
        return min(self.collective_rpc("determine_num_blocks"))

    def initialize_cache(self, num_blocks: int) -> None:
        self.collective_rpc("initialize_cache", (num_blocks,))

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        return self.collective_rpc("execute_model", (sched,), reply_ranks=(0,))[0]

    @abstractmethod
    def launch_model(self, sched: SchedulerOutput) -> Any:
        """Start a step (asynchronous scheduling) and return without waiting for it; ``.result()``
        of the returned handle waits for its ModelRunnerOutput."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop the workers and release their devices (idempotent)."""


def create_executor(config: EngineConfig) -> Executor:
    backend = config.parallel.distributed_executor_backend
    if backend is None:
        backend = "ray" if config.parallel.tensor_parallel_size > 1 else "uni"
    if backend == "uni":
        if config.parallel.tensor_parallel_size > 1:
            raise ConfigError("the in-process executor runs one device; tensor_parallel_size > 1 needs "
                              "distributed_executor_backend='ray' or 'mp'")
        from pagedawq.engine.executor.uniproc import UniProcExecutor
        return UniProcExecutor(config)
    if backend == "mp":
        from pagedawq.engine.executor.multiproc import MultiprocExecutor
        return MultiprocExecutor(config)
    from pagedawq.engine.executor.ray import RayExecutor
    return RayExecutor(config)
