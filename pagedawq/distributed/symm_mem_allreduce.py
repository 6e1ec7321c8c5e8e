"""One-shot all-reduce through PyTorch symmetric memory, for the small tensors of decode steps.

A row-parallel layer at batch 1 all-reduces a few kilobytes twice per transformer layer. NCCL's
ring/tree protocols pay ~10-20 us of fixed cost per call there. With P2P-mapped symmetric buffers
the ranks can instead exchange their partial sums directly and add them in one kernel
(``pagedawq.kernels.one_shot_allreduce``: each rank pushes its input into every peer's buffer,
then sums locally as the values arrive). PyTorch
allocates the buffers and maps them into every peer; the kernel is ours because PyTorch's own
one-shot kernel has no float16 (the AutoAWQ dtype). No NVLink multicast is involved.

The path is optional: it is set up only on CUDA with more than one rank, checked once against
NCCL on the engine's dtype, and any failure (an old PyTorch, no P2P) logs why and leaves NCCL in
charge. ``PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1`` turns it off. The same buffers serve the fused
all-reduce + residual add + RMSNorm that the norms after row-parallel layers use, checked at
start-up against the unfused kernels.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist

from pagedawq.kernels import greedy_exchange as greedy
from pagedawq.kernels import one_shot_allreduce as one_shot

logger = logging.getLogger(__name__)


def default_max_bytes(world_size: int) -> int:
    """Largest all-reduce the one-shot kernel takes; larger ones go to NCCL, whose
    bandwidth-optimal algorithms win there. Each rank sends its copy to every peer, so the crossover
    falls as ranks are added: 1 MiB / ranks. Measured (benchmarks/allreduce.py, fp16, in a CUDA
    graph): at 2 ranks (2 x H100, session 15) the kernel took 5.2 / 9.0 / 16.3 us at 256 KiB /
    512 KiB / 1 MiB against NCCL's 14.0 / 15.8 / 19.8, so a 13B prefill of up to 51 tokens also
    skips NCCL's host path (~10 ms of a 32-token TP=2 prefill's host time went to its 81 NCCL
    calls, profiled); at 4 ranks (4 x H100, session 19) 6.6 / 11.4 / 20.8 us at 128 / 256 / 512 KiB
    against NCCL's 16.9 / 17.1 / 20.5. In the engine (70B AWQ at TP=4, 4 x H100, session 20) this
    limit against 64 KiB cut the decode step at batch 8 from 7256 to 5879 us and at batch 16 from
    7876 to 6581 us (128 / 256 KiB a call). 3 and 8 ranks are not measured."""
    return (1 << 20) // max(world_size, 1)


# Widest row the fused all-reduce + residual add + RMSNorm takes (one program holds a whole row).
MAX_FUSED_HIDDEN = 16384
# Most sampled rows a greedy-token exchange takes (more go through the MAX all-reduce).
KEY_ROWS = 1024


class SymmMemAllReduce:
    """All-reduce of tensors up to ``max_bytes`` through one symmetric buffer per rank, which holds
    the receive slots the peers push into (two parities x ranks x ``max_bytes``)."""

    def __init__(self, group: dist.ProcessGroup, device: torch.device, dtype: torch.dtype,
                 max_bytes: int | None = None) -> None:
        import torch.distributed._symmetric_memory as symm_mem
        self.group_name = group.group_name
        self.dtype = dtype
        if max_bytes is None:
            max_bytes = default_max_bytes(dist.get_world_size(group))
        self.max_numel = max_bytes // 16 * 16 // dtype.itemsize   # receive slots of whole 16-byte vectors
        if hasattr(symm_mem, "enable_symm_mem_for_group"):   # needed before PyTorch 2.8, a no-op after
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                symm_mem.enable_symm_mem_for_group(self.group_name)
        world_size = dist.get_world_size(group)
        self.buffer, self.buffer_ptrs, handle = _receive_buffer(
            symm_mem, group, one_shot.buffer_elements(self.max_numel, world_size), dtype, one_shot.EMPTY, device)
        self.rank, self.world_size = handle.rank, handle.world_size
        self.epochs = torch.zeros(one_shot.PROGRAMS, dtype=torch.int32, device=device)   # this rank's call counters
        self.fuse_add_rms_norm = False   # until ``try_create`` has checked it against the unfused path
        # Where row-parallel GEMMs push their outputs for the fused kernel (off: PAGEDAWQ_DISABLE_PUSHED_GEMMS=1).
        self.push = one_shot.PushTarget(one_shot.push_table(self.buffer_ptrs, self.epochs, self.max_numel), self.rank,
                                        self.world_size, self.max_numel)
        self.push_gemms = os.environ.get("PAGEDAWQ_DISABLE_PUSHED_GEMMS") != "1"
        # The greedy-token exchange's own buffer of int64 keys and its programs' counters.
        self.keys, self.key_ptrs, _ = _receive_buffer(
            symm_mem, group, greedy.buffer_elements(KEY_ROWS, world_size), torch.int64, greedy.EMPTY, device)
        self.key_epochs = torch.zeros(greedy.PROGRAMS, dtype=torch.int32, device=device)
        self.exchange_greedy = False   # until ``try_create`` has checked it against the MAX all-reduce

    def can_reduce(self, x: torch.Tensor) -> bool:
        return x.dtype == self.dtype and x.is_contiguous() and x.numel() <= self.max_numel

    def _check_fits(self, x: torch.Tensor) -> None:
        # The kernels push x into the peers' receive slots: a larger x would write past them.
        if x.numel() > self.max_numel:
            raise ValueError(f"{x.numel()} elements exceed the symmetric buffer's {self.max_numel}; "
                             "check can_reduce() first")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the ranks, in place."""
        self._check_fits(x)
        flat = x.view(-1)
        one_shot.one_shot_all_reduce(flat, flat, self.buffer_ptrs, self.epochs, self.rank, self.world_size,
                                     self.max_numel)
        return x

    def can_exchange_greedy(self, logits: torch.Tensor) -> bool:
        """Whether ``greedy_tokens`` takes these [rows, V_rank] logits: enabled (its start-up check
        passed) and at most ``KEY_ROWS`` rows."""
        return self.exchange_greedy and logits.dim() == 2 and logits.shape[0] <= KEY_ROWS

    def greedy_tokens(self, logits: torch.Tensor, start: int) -> torch.Tensor:
        """The greedy token of each row of the vocabulary-parallel ``logits`` (this rank's columns are
        tokens ``start ..``), the same on every rank (``greedy_exchange``)."""
        return greedy.greedy_exchange(logits, start, self.key_ptrs, self.key_epochs, self.rank, self.world_size,
                                      KEY_ROWS)

    def _fused_norm_takes(self, rows: int, hidden: int, dtype: torch.dtype) -> bool:
        """Whether the fused all-reduce + RMSNorm kernel takes a [rows, hidden] sum of ``dtype``:
        enabled (its start-up check passed), within the receive slots, rows short enough for one
        program."""
        return (self.fuse_add_rms_norm and dtype == self.dtype and rows * hidden <= self.max_numel
                and hidden <= MAX_FUSED_HIDDEN)

    def can_fuse_add_rms_norm(self, x: torch.Tensor) -> bool:
        """Whether ``add_rms_norm`` takes ``x``: a contiguous [rows, hidden] tensor the fused kernel takes."""
        return x.dim() == 2 and x.is_contiguous() and self._fused_norm_takes(*x.shape, x.dtype)

    def can_fuse_embedding_rms_norm(self, rows: int, shard: torch.Tensor) -> bool:
        """Whether ``embedding_rms_norm`` takes ``rows`` lookups in ``shard``: as ``can_fuse_add_rms_norm``
        for their [rows, hidden] sum."""
        return shard.is_contiguous() and self._fused_norm_takes(rows, shard.shape[-1], shard.dtype)

    def embedding_rms_norm(self, ids: torch.Tensor, shard: torch.Tensor, vocab_start: int, weight: torch.Tensor,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rms_norm(h) * weight, h)`` for ``h`` the vocabulary-parallel embedding of ``ids`` (this
        rank's ``shard`` holds the token ids from ``vocab_start``), in one kernel."""
        return one_shot.one_shot_all_reduce_embedding_rms_norm(ids, shard, vocab_start, weight, eps, self.buffer_ptrs,
                                                               self.epochs, self.rank, self.world_size, self.max_numel)

    def push_target(self, rows: int, hidden: int, dtype: torch.dtype) -> one_shot.PushTarget | None:
        """Where a GEMM may push a [rows, hidden] output of ``dtype`` for ``pushed_add_rms_norm``
        (None where ``add_rms_norm`` would not take that output, or pushing is turned off)."""
        return self.push if self.push_gemms and self._fused_norm_takes(rows, hidden, dtype) else None

    def pushed_add_rms_norm(self, x: one_shot.PushedOutput, residual: torch.Tensor, weight: torch.Tensor, eps: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """``add_rms_norm`` of an output its GEMM pushed to ``push_target``'s slots."""
        return one_shot.pushed_all_reduce_add_rms_norm(x, residual, weight, eps, self.buffer_ptrs, self.epochs,
                                                       self.rank, self.world_size, self.max_numel)

    def add_rms_norm(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rms_norm(sum_ranks(x) + residual) * weight, sum_ranks(x) + residual)`` in one kernel."""
        self._check_fits(x)
        return one_shot.one_shot_all_reduce_add_rms_norm(x, residual, weight, eps, self.buffer_ptrs, self.epochs,
                                                         self.rank, self.world_size, self.max_numel)


def _receive_buffer(symm_mem, group: dist.ProcessGroup, numel: int, dtype: torch.dtype, empty, device: torch.device):
    """A symmetric buffer of ``numel`` elements mapped into every rank, filled with the kernels'
    ``empty`` value on every rank before any peer can push into it (a push that the fill overwrote
    would leave its receiver waiting for ever); returns it, every rank's address of it (int64, on
    the device, as the kernels read them) and the rendezvous handle."""
    buffer = symm_mem.empty(numel, dtype=dtype, device=device)
    handle = symm_mem.rendezvous(buffer, group.group_name)
    buffer.fill_(empty)
    torch.cuda.synchronize(device)
    dist.barrier(group)
    return buffer, torch.tensor(handle.buffer_ptrs, dtype=torch.int64, device=device), handle


# A probe that spins longer than this means the peers never see each other's pushes.
PROBE_TIMEOUT_S = 60.0


class AllReduceProbeTimeout(RuntimeError):
    """The start-up probe's kernel did not finish: the GPUs do not see each other's pushes."""


def wait_for_device(event, timeout_s: float) -> None:
    """Wait for ``event`` (anything with ``query()``) for at most ``timeout_s``.

    A one-shot kernel whose peers cannot reach its memory spins for ever, and the NCCL vote that would
    report it queues behind it: instead of hanging the engine's start-up, the rank fails with the
    way out (an error in a worker ends the engine's start with EngineDeadError)."""
    deadline = time.monotonic() + timeout_s
    while not event.query():
        if time.monotonic() > deadline:
            raise AllReduceProbeTimeout(
                f"the symmetric-memory all-reduce did not finish within {timeout_s:.0f} s at start-up (the GPUs "
                "may not reach each other's memory); set PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1 to use NCCL only")
        time.sleep(0.001)


def _check_on_device(launch: Callable[[], Callable[[], bool]], differs: str) -> tuple[bool, str]:
    """(ok, why not) of a start-up check: ``launch`` enqueues the kernels and returns the comparison,
    which runs only once the device has finished them (a comparison would wait for ever on a
    kernel whose peers' pushes never arrive; the wait here raises instead)."""
    try:
        compare = launch()
        done = torch.cuda.Event()
        done.record()
        wait_for_device(done, PROBE_TIMEOUT_S)
        return (True, "") if compare() else (False, differs)
    except AllReduceProbeTimeout:
        raise   # the device is stuck in the kernel: no NCCL vote can follow
    except Exception as e:  # noqa: BLE001 - any failure just means "not this path"
        return False, f"the probe failed: {e}"


def _all_agree(ok: bool, group: dist.ProcessGroup, device: torch.device) -> bool:
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    return bool(flag.item())


def try_create(group: dist.ProcessGroup, device: torch.device, dtype: torch.dtype) -> SymmMemAllReduce | None:
    """The symmetric-memory all-reduce, verified against NCCL on this dtype; None if unavailable.

    Every rank calls this; each stage ends in an NCCL vote, so one rank's failure cannot leave
    the others waiting in a symmetric-memory barrier."""
    if os.environ.get("PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE") == "1" or device.type != "cuda":
        return None
    try:
        import torch.distributed._symmetric_memory  # noqa: F401
    except ImportError:
        logger.info("this PyTorch has no symmetric memory; using NCCL")
        return None
    # Small integers are exact in every float dtype, so both paths must agree bit for bit.
    gen = torch.Generator(device="cpu").manual_seed(1234 + dist.get_rank(group))
    probe = torch.randint(-8, 8, (4096,), generator=gen).to(device=device, dtype=dtype)
    expected = probe.clone()
    dist.all_reduce(expected, group=group)
    reducer, reason = None, ""
    try:
        reducer = SymmMemAllReduce(group, device, dtype)
    except Exception as e:  # noqa: BLE001 - any failure just means "use NCCL"
        reason = f"set-up failed: {e}"
    ok = _all_agree(reducer is not None, group, device)
    if ok:
        def launch() -> Callable[[], bool]:
            for _ in range(3):   # several calls: the epochs and the receive slots' parities advance
                got = reducer(probe.clone())
            return lambda: torch.equal(got, expected)
        ok, reason = _check_on_device(launch, "its result differs from NCCL's")
        ok = _all_agree(ok, group, device)
    if not ok:
        logger.warning("symmetric-memory all-reduce unavailable (%s); using NCCL for every all-reduce",
                    reason or "another rank could not use it")
        return None
    logger.info("all-reduces up to %d KiB use the symmetric-memory one-shot kernel",
                reducer.max_numel * dtype.itemsize // 1024)
    reducer.fuse_add_rms_norm = _fused_add_rms_norm_agrees(reducer, group, device, dtype)
    reducer.exchange_greedy = _greedy_exchange_agrees(reducer, group, device, dtype)
    return reducer


def _fused_add_rms_norm_agrees(reducer: SymmMemAllReduce, group: dist.ProcessGroup, device: torch.device,
                               dtype: torch.dtype) -> bool:
    """Check the fused all-reduce + residual add + RMSNorm against the one-shot all-reduce followed
    by the RMSNorm kernel, on every rank: both round at the same points, so they must agree bit for
    bit. If not (or if it fails), the layers keep the unfused path; the all-reduce stays fast.
    ``PAGEDAWQ_DISABLE_FUSED_ALLREDUCE_NORM=1`` keeps the unfused path (for A/B runs)."""
    from pagedawq.kernels import ops
    if os.environ.get("PAGEDAWQ_DISABLE_FUSED_ALLREDUCE_NORM") == "1":
        return False
    gen = torch.Generator(device="cpu").manual_seed(4321 + dist.get_rank(group))
    x = torch.randint(-8, 8, (3, 1000), generator=gen).to(device=device, dtype=dtype)
    residual = torch.randint(-8, 8, (3, 1000), generator=gen).to(device=device, dtype=dtype)
    weight = torch.rand(1000, generator=torch.Generator().manual_seed(7)).to(device=device, dtype=dtype)
    def launch() -> Callable[[], bool]:
        expected = ops.fused_add_rms_norm(reducer(x.clone()), residual, weight, 1e-5)
        got = reducer.add_rms_norm(x, residual, weight, 1e-5)
        return lambda: all(torch.equal(g, e) for g, e in zip(got, expected))
    return _agreed(_check_on_device(launch, "its result differs from the unfused path's"), group, device,
                   "fused all-reduce + RMSNorm", "the norms run after the all-reduce",
                   "the all-reduce after each row-parallel layer is fused with the residual add and RMSNorm")


def _greedy_exchange_agrees(reducer: SymmMemAllReduce, group: dist.ProcessGroup, device: torch.device,
                            dtype: torch.dtype) -> bool:
    """Check the greedy-token exchange against the MAX all-reduce of the same keys, on every rank,
    with ties inside and across the ranks' slices: the tokens must be equal. If not (or if it
    fails), greedy rows take the all-reduce. ``PAGEDAWQ_DISABLE_GREEDY_EXCHANGE=1`` turns it off."""
    if os.environ.get("PAGEDAWQ_DISABLE_GREEDY_EXCHANGE") == "1":
        return False
    rank = dist.get_rank(group)
    gen = torch.Generator(device="cpu").manual_seed(99)   # the same on every rank: ties across slices
    logits = torch.randint(-4, 4, (5, 300), generator=gen).to(device=device, dtype=dtype)
    logits[:, rank::7] += rank % 2    # and some that differ between ranks
    expected = greedy.row_keys(logits, rank * 300)
    dist.all_reduce(expected, op=dist.ReduceOp.MAX, group=group)
    expected = greedy.tokens_of_keys(expected)

    def launch() -> Callable[[], bool]:
        got = [reducer.greedy_tokens(logits, rank * 300) for _ in range(3)]   # the epochs and parities advance
        return lambda: all(torch.equal(g, expected) for g in got)
    return _agreed(_check_on_device(launch, "its tokens differ from the MAX all-reduce's"), group, device,
                   "greedy-token exchange", "greedy rows all-reduce their keys through NCCL",
                   "greedy rows exchange their best tokens through symmetric memory")


def _agreed(check: tuple[bool, str], group: dist.ProcessGroup, device: torch.device, what: str, otherwise: str,
            enabled: str) -> bool:
    """Whether a start-up check (``_check_on_device``'s (ok, why not)) passed on every rank; logs
    that ``what`` is used, or why not and what is used ``otherwise``."""
    ok, reason = check
    if not _all_agree(ok, group, device):
        logger.warning("%s unavailable (%s); %s", what, reason or "another rank could not use it", otherwise)
        return False
    logger.info(enabled)
    return True
