"""One worker per device: owns the model shard, the KV cache tensors and the model runner.

The executor drives workers only through these methods (by name, via ``collective_rpc``), so the
same class runs in-process, in a Ray actor or in a subprocess.
"""
from __future__ import annotations

import logging
import os
import time

import torch

from pagedawq.config import EngineConfig
from pagedawq.distributed.parallel_state import (destroy_tensor_parallel, enable_fast_small_allreduce,
                                                 init_tensor_parallel)
from pagedawq.engine.model_runner import ModelRunner, ModelRunnerOutput, PendingOutput
from pagedawq.engine.scheduler import SchedulerOutput
from pagedawq.models.loader import load_model

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_CACHE_BYTES = 1024**3


class Worker:
    def __init__(self, config: EngineConfig, rank: int = 0, local_rank: int = 0,
                 distributed_init_method: str | None = None) -> None:
        self.config = config
        self.rank = rank
        self.local_rank = local_rank
        self.distributed_init_method = distributed_init_method
        self.runner: ModelRunner | None = None
        self.profiler: torch.profiler.profile | None = None
        self._pending: PendingOutput | None = None   # launched by launch_model, not yet answered

    def init_device(self) -> None:
        world = self.config.parallel.tensor_parallel_size
        if self.config.device == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            backend = "nccl"
        else:
            self.device = torch.device("cpu")
            backend = "gloo"
        init_tensor_parallel(self.rank, world, self.distributed_init_method or "env://", backend)
        enable_fast_small_allreduce(self.device, self.config.model.dtype)
        torch.manual_seed(self.config.model.seed)

    def load_model(self) -> None:
        model = load_model(self.config.model, str(self.device))
        if self.config.tune_kernels:
            self._tune_kernels(model)
        self.runner = ModelRunner(self.config, model, self.device, is_driver=self.rank == 0)

    def _tune_kernels(self, model: torch.nn.Module) -> None:
        """Time the AWQ GEMV configurations for this rank's layer shapes (before the KV cache and
        the CUDA graphs, which then use the choices)."""
        from pagedawq.quant.awq import awq_gemv_shapes
        shapes = awq_gemv_shapes(model)
        if self.device.type != "cuda" or not shapes:
            logger.info("tune_kernels: nothing to tune (%s)", "no AWQ layers" if not shapes else "not on CUDA")
            return
        from pagedawq.kernels.gemv_autotune import tune_gemv
        tune_gemv(shapes, self.config.model.dtype, self.device)
        torch.cuda.empty_cache()

    def determine_num_blocks(self) -> int:
        """How many KV blocks fit: the explicit byte budget, or on GPU what is left of
        ``gpu_memory_utilization`` of the card after weights and a peak-sized forward."""
        per_block = self.runner.bytes_per_block()
        budget = self.config.cache.kv_cache_memory_bytes
        if budget is None and self.device.type == "cuda":
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.device)
            used_before = total - free
            allocated_before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.runner.profile_run()
            torch.cuda.synchronize(self.device)
            activation_peak = torch.cuda.max_memory_allocated(self.device) - allocated_before
            torch.cuda.empty_cache()
            budget = int(total * self.config.cache.gpu_memory_utilization - used_before - activation_peak)
            logger.info("GPU memory: %.1f GiB total, %.1f GiB used by weights and others, %.1f GiB peak "
                        "activations -> %.1f GiB for the KV cache", total / 2**30, used_before / 2**30,
                        activation_peak / 2**30, max(budget, 0) / 2**30)
        elif budget is None:
            budget = DEFAULT_CPU_KV_CACHE_BYTES
        return max(0, budget // per_block)

    def initialize_cache(self, num_blocks: int) -> None:
        self.config.cache.num_blocks = num_blocks
        self.runner.bind_kv_cache(num_blocks)

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput | None:
        return self.runner.execute(sched)

    def launch_model(self, sched: SchedulerOutput) -> ModelRunnerOutput | None:
        """Launch ``sched`` and return the output of the step launched before it (rank 0; None
        when there was none, and on other ranks): the reply to step n's launch is step n-1's
        tokens, read while step n runs (asynchronous scheduling across processes)."""
        pending = self.runner.launch(sched)
        previous, self._pending = self._pending, pending
        return previous.result() if previous is not None else None

    def flush_model(self) -> ModelRunnerOutput | None:
        """The output of the last launched step (rank 0), when no further step follows it."""
        previous, self._pending = self._pending, None
        return previous.result() if previous is not None else None

    def start_profile(self) -> None:
        """Record this rank's CPU ops and GPU kernels until :meth:`stop_profile`."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.start()

    def stop_profile(self, trace_dir: str | None = None) -> dict:
        """Stop recording; write a Chrome trace to ``trace_dir`` if given. Returns this rank's
        summary: total kernel time, kernel time by kernel name, and the top ops as a table."""
        prof, self.profiler = self.profiler, None
        if prof is None:
            raise RuntimeError("stop_profile() without start_profile()")
        prof.stop()
        if trace_dir:
            os.makedirs(trace_dir, exist_ok=True)
            prof.export_chrome_trace(os.path.join(trace_dir, f"rank{self.rank}.json"))
        # Kernel time from the device-side events only: the averaged table also credits their
        # time to the launching aten op and to annotations such as "nccl:all_reduce".
        kernels: dict[str, float] = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False):
                kernels[e.name] = kernels.get(e.name, 0.0) + e.device_time_total
        sort_key = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        return {"rank": self.rank,
                "device_time_us": sum(kernels.values()),
                "kernel_time_us": dict(sorted(kernels.items(), key=lambda kv: -kv[1])),
                "table": prof.key_averages().table(sort_by=sort_key, row_limit=30)}

    def time_decode_graph(self, batch: int, replays: int = 50, context_len: int | None = None) -> dict:
        """GPU time of this rank's captured decode graph of ``batch`` sequences replayed back to back
        (its static inputs as the last step left them), and the host time of one replay call. Of
        that batch size's context buckets, the graph for contexts of ``context_len`` tokens, by
        default the one the inputs' longest context takes. Called on every rank at once
        (``collective_rpc``), the ranks' graphs meet in their all-reduces as in a step, so at TP > 1
        this is the step's device time without the host in between."""
        graphs = self.runner.graphs if self.runner is not None else None
        if graphs is None or batch not in graphs.sizes:
            raise ValueError(f"no decode graph of batch {batch} on this rank (captured: "
                             f"{graphs.sizes if graphs is not None else 'none'})")
        if context_len is None:
            context_len = int(graphs.seq_lens[:batch].max())
        graph, _ = graphs.graph_for(batch, context_len)
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        host = []
        for _ in range(20):
            torch.cuda.synchronize(self.device)
            t = time.perf_counter()
            graph.replay()
            host.append(1e6 * (time.perf_counter() - t))
        torch.cuda.synchronize(self.device)
        return {"rank": self.rank, "gpu_us": start.elapsed_time(end) * 1000 / replays,
                "host_us": sorted(host)[len(host) // 2]}

    def ping(self) -> int:
        return os.getpid()

    def shutdown(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.runner = None
        destroy_tensor_parallel()
