"""What the multi-process executors share: per-step commands over the :mod:`step_channel`.

Ray (``ray.py``) or plain multiprocessing (``multiproc.py``) only start the rank processes and
tell whether they are still alive; once each rank sits in its command loop, every step goes the
same way: the driver writes the step to all ranks, rank 0 answers. Asynchronous scheduling pairs
each launch's reply with the step launched before it (``_LaunchedStep``).
"""
from __future__ import annotations

import os
import secrets
import socket
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from pagedawq.config import EngineConfig
from pagedawq.engine.executor.base import Executor
from pagedawq.engine.executor.step_channel import STOP, DriverChannel
from pagedawq.engine.model_runner import ModelRunnerOutput
from pagedawq.engine.scheduler import SchedulerOutput
from pagedawq.errors import EngineDeadError

if TYPE_CHECKING:
    from pagedawq.engine.worker import Worker

# How long start-up waits for every rank to connect to the driver's channel.
CONNECT_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the ranks' process-group rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_rank_worker(config: EngineConfig, rank: int, local_rank: int, init_method: str) -> "Worker":
    """A rank's Worker, in the rank's own process: device and process group up, shard loaded.
    CPU ranks split the host's cores between them (gloo ranks share one machine)."""
    from pagedawq.engine.worker import Worker
    if config.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.parallel.tensor_parallel_size))
    worker = Worker(config, rank=rank, local_rank=local_rank, distributed_init_method=init_method)
    worker.init_device()
    worker.load_model()
    return worker


class _LaunchedStep:
    """Handle of a step launched on the workers; ``result()`` is its ModelRunnerOutput."""

    def __init__(self, executor: "ChannelExecutor") -> None:
        self.executor = executor
        self.output: ModelRunnerOutput | None = None
        self.done = False

    def resolve(self, output: ModelRunnerOutput) -> None:
        self.output, self.done = output, True

    def result(self) -> ModelRunnerOutput:
        if not self.done:
            self.executor._flush(self)
        return self.output


class ChannelExecutor(Executor):
    """An executor whose ranks run :func:`step_channel.serve_worker` in other processes.

    Subclasses start the processes (each connecting to ``self.channel``) and implement
    :meth:`_check_alive`; :meth:`_close_channel` is the first half of their shutdown."""

    channel: DriverChannel | None = None
    _outstanding: _LaunchedStep | None = None

    def _make_channel(self, world_size: int, host: str) -> str:
        """Open the driver's end; returns the token the ranks must present."""
        token = secrets.token_hex(16)
        self.channel = DriverChannel(world_size, host, token)
        return token

    def _await_ranks(self) -> None:
        self.channel.accept_all(timeout_s=CONNECT_TIMEOUT_S, still_starting=self._check_alive)

    @abstractmethod
    def _check_alive(self) -> None:
        """Raise EngineDeadError if a rank's process or command loop has ended."""

    def collective_rpc(self, method: str, args: tuple = (), kwargs: dict[str, Any] | None = None,
                       reply_ranks: Sequence[int] | None = None) -> list[Any]:
        if self.channel is None:
            raise EngineDeadError("the tensor-parallel workers have been shut down")
        ranks = tuple(range(self.channel.world_size)) if reply_ranks is None else tuple(reply_ranks)
        self.channel.broadcast((method, args, kwargs or {}, ranks))
        replies = self.channel.gather(ranks, self._check_alive, command=f"'{method}'")
        return [replies[r] for r in ranks]

    # ---- asynchronous scheduling (the default on CUDA) -----------------------------------------
    def launch_model(self, sched: SchedulerOutput) -> _LaunchedStep:
        """Launch ``sched`` on every rank. Rank 0 answers with the previous step's tokens, which
        resolve that step's handle; the new step's handle resolves with the next launch or, if
        none comes first, with a flush."""
        previous, self._outstanding = self._outstanding, _LaunchedStep(self)
        (reply,) = self.collective_rpc("launch_model", (sched,), reply_ranks=(0,))
        if previous is not None:
            previous.resolve(reply)
        return self._outstanding

    def _flush(self, step: _LaunchedStep) -> None:
        if step is not self._outstanding:
            raise RuntimeError("a launched step was neither resolved nor the last one launched")
        self._outstanding = None
        (reply,) = self.collective_rpc("flush_model", reply_ranks=(0,))
        step.resolve(reply)

    def _close_channel(self) -> None:
        """Tell every rank to leave its loop (best effort) and close the sockets (idempotent)."""
        channel, self.channel = self.channel, None
        if channel is None:
            return
        try:
            channel.broadcast((STOP, (), {}, ()))
        except EngineDeadError:
            pass   # a rank is already gone; the subclass ends the others
        channel.close()
