"""One worker in the engine's own process (tensor_parallel_size = 1)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pagedawq.config import EngineConfig
from pagedawq.engine.executor.base import Executor
from pagedawq.engine.model_runner import PendingOutput
from pagedawq.engine.scheduler import SchedulerOutput
from pagedawq.engine.worker import Worker


class UniProcExecutor(Executor):
    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.worker: Worker | None = Worker(config, rank=0)
        self.worker.init_device()
        self.worker.load_model()

    def collective_rpc(self, method: str, args: tuple = (), kwargs: dict[str, Any] | None = None,
                       reply_ranks: Sequence[int] | None = None) -> list[Any]:
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    def launch_model(self, sched: SchedulerOutput) -> PendingOutput:
        return self.worker.runner.launch(sched)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()
            self.worker = None
