"""Tensor parallelism on one machine without Ray: one spawned process per rank.

``distributed_executor_backend="mp"``. Ray is the default for ``tensor_parallel_size > 1`` (it
places ranks across nodes and reserves GPUs); this executor needs nothing beyond the standard
library, for a single machine: rank r runs on ``cuda:r`` of the devices the driver sees
(``CUDA_VISIBLE_DEVICES`` selects them) or on the CPU over gloo. The processes are spawned (not
forked: CUDA and a forked parent do not mix), inherit the driver's environment, connect to the
driver's step channel and then build their Worker on command, so that a failure while loading the
shard comes back with its traceback as :class:`EngineDeadError`; a rank that dies later is
noticed by its closed socket or its exit code, never waited on for ever.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

from pagedawq.config import EngineConfig
from pagedawq.engine.executor.channel_executor import ChannelExecutor, build_rank_worker, free_port
from pagedawq.engine.executor.step_channel import serve_worker
from pagedawq.errors import EngineDeadError

logger = logging.getLogger(__name__)

# How long shutdown waits for a rank to leave after STOP before it is terminated.
JOIN_TIMEOUT_S = 10.0


class _RankProcess:
    """The body of a rank's process: builds its Worker on the driver's ``init_worker`` command,
    then runs any Worker method by name."""

    def __init__(self, config: EngineConfig, rank: int) -> None:
        self.config, self.rank = config, rank
        self.worker = None

    def execute(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "init_worker":
            (init_method,) = args
            local_rank = self.rank if self.config.device == "cuda" else 0
            self.worker = build_rank_worker(self.config, self.rank, local_rank, init_method)
            return os.getpid()
        return getattr(self.worker, method)(*args, **kwargs)


def _rank_main(config: EngineConfig, rank: int, address: tuple[str, int], token: str) -> None:
    serve_worker(address, rank, token, _RankProcess(config, rank).execute)


class MultiprocExecutor(ChannelExecutor):
    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        tp = config.parallel.tensor_parallel_size
        self.processes: list[multiprocessing.Process] = []
        self._connected = False
        try:
            token = self._make_channel(tp, "127.0.0.1")
            ctx = multiprocessing.get_context("spawn")
            for rank in range(tp):
                proc = ctx.Process(target=_rank_main, args=(config, rank, self.channel.address, token),
                                   name=f"pagedawq-rank{rank}", daemon=True)
                proc.start()
                self.processes.append(proc)
            self._await_ranks()
            self._connected = True
            pids = self.collective_rpc("init_worker", (f"tcp://127.0.0.1:{free_port()}",))
            logger.info("started %d worker processes (pids %s) for tensor parallelism", tp, pids)
        except BaseException:
            self.shutdown()
            raise

    def _check_alive(self) -> None:
        for rank, proc in enumerate(self.processes):
            if proc.exitcode is not None:
                hint = "" if self._connected else (
                    "; it died before reaching the engine. A spawned process first re-imports the main script: "
                    "a script that creates the LLM must do so under `if __name__ == \"__main__\":`")
                raise EngineDeadError(f"a tensor-parallel worker died (rank {rank}, pid {proc.pid}, "
                                      f"exit code {proc.exitcode}){hint}")

    def shutdown(self) -> None:
        self._close_channel()
        processes, self.processes = self.processes, []
        for proc in processes:
            proc.join(JOIN_TIMEOUT_S)
            if proc.is_alive():
                logger.warning("worker process %s did not stop within %.0f s; terminating it", proc.pid,
                               JOIN_TIMEOUT_S)
                proc.terminate()
                proc.join(JOIN_TIMEOUT_S)
                if proc.is_alive():   # SIGTERM handled or blocked: a stuck rank must still go
                    proc.kill()
                    proc.join(JOIN_TIMEOUT_S)
