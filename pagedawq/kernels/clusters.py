"""Thread-block clusters for Gluon kernels compiled for one CTA (Hopper): launch, and the PTX they use.

Why: a split-K GEMM's K slices must meet to sum their partials. Through global memory that costs
the last slice a release fence, an atomic counter and a reload (about 1.5 us a launch at small M on
the H100, ``benchmarks/notes/awq_gemm.md`` session 11). When the slices of an output tile form a
cluster, each pushes its partial into the shared memory of the CTA that sums it (``st.async``,
counted by that CTA's mbarrier), with no trip to L2 and no memory barrier (session 12: a cluster
barrier with release semantics compiles to ``MEMBAR.ALL.GPU`` and cost as much as it saved).

Triton 3.6 launches clusters only for kernels compiled with ``num_ctas > 1``, whose layouts then
split each tensor across the cluster's CTAs. Here the kernel is compiled for one CTA, as usual, and
launched with its packed launch metadata's cluster size set (``launch_clustered``): the launcher
then multiplies grid axis 0 by the cluster size and sets the cluster attribute, and each CTA runs
as its own program, reading its rank in the cluster as ``program_id(0) % cluster``. The kernel gets
``extra_smem`` bytes of dynamic shared memory past what Triton allocated, at the byte offset passed
as its ``cluster_smem`` argument (relative to ``global_smem``, Triton's dynamic shared memory).

Triton's launcher asks the driver to *spread* each cluster's CTAs over the SMs. With clusters of 4
that leaves some SMs without a CTA and gives others three (session 17, ncu's ``sm__ctas_launched``),
so the split layers stream more slowly than unsplit ones. ``SCHEDULING_POLICY`` picks the policy a
clustered launch asks for instead, through a launcher built from Triton's own with that one value
changed (``_launcher_with_policy``). Asking for *load balancing* places 7B down's 64 clusters of 4
at 1-2 CTAs an SM, and the GEMM takes 12.36 us instead of 12.76 at M = 1 (12.85 against 13.63 at
M = 16; H100, session 18, ``benchmarks/gpu/cluster_policy_h100.sh``), and the 7B AWQ decode graphs
take 1.3% less time at batch 1 and 2.8% less at batch 16 than under *spread* (session 39).
"""
from __future__ import annotations

import logging
import threading
from functools import lru_cache

import torch
from triton.runtime import driver
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

logger = logging.getLogger(__name__)

# Portable cluster sizes (more than 8 CTAs needs a per-kernel opt-in).
CLUSTER_SIZES = (2, 4, 8)
# Dynamic shared memory a kernel may use without the opt-in attribute, which Triton's loader sets
# (to the device's maximum) only for kernels that allocate more than this themselves.
_DEFAULT_SMEM = 48 * 1024

# The CUclusterSchedulingPolicy a clustered launch asks for (a process-wide choice, read when a
# kernel specialisation is first launched clustered): "spread" is what Triton's launcher asks.
SCHEDULING_POLICY = "load_balancing"
SCHEDULING_POLICIES = {"default": "CU_CLUSTER_SCHEDULING_POLICY_DEFAULT",
                       "spread": "CU_CLUSTER_SCHEDULING_POLICY_SPREAD",
                       "load_balancing": "CU_CLUSTER_SCHEDULING_POLICY_LOAD_BALANCING"}
_LAUNCHER_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _smem_optin(index: int) -> int:
    """The most shared memory a CTA may opt in to on device ``index`` (as Triton's loader reads it)."""
    return driver.active.utils.get_device_properties(index)["max_shared_mem"]


# Launch fingerprint (``_fingerprint``) -> the byte offset of the kernel's cluster memory, or -1
# where the launch cannot have it: later launches of the same specialisation skip ``warmup``.
_OFFSETS: dict[tuple, int] = {}
_MAX_OFFSETS = 4096   # distinct launches remembered (eager prefills of many lengths); then start over


def _fingerprint(value) -> tuple:
    """What of a launch argument can decide which compiled kernel Triton picks, and more: a tensor's
    dtype, shape, strides, device and 16-byte alignment (not its address); a TMA descriptor's as
    well as its base's; an int, bool, string, None or dtype itself with its type (True is not 1); any
    other value's repr (floats too: a NaN is not equal to itself). Finer than Triton's
    specialisation key, so two launches with the same fingerprint run the same compiled kernel. Eager
    forwards compute ~30 of these a clustered launch, so the common kinds skip ``repr``."""
    if isinstance(value, torch.Tensor):
        return (value.dtype, value.shape, value.stride(), value.device, value.data_ptr() % 16)
    kind = type(value)
    if kind in _BY_VALUE:
        return (kind, value)
    if hasattr(value, "base") and hasattr(value, "block_shape"):   # a TMA TensorDescriptor
        return ("desc", _fingerprint(value.base), tuple(value.shape), tuple(value.strides), tuple(value.block_shape),
                repr(value.layout), repr(getattr(value, "padding", None)))
    return (kind.__name__, repr(value))


_BY_VALUE = frozenset((int, bool, str, type(None), torch.dtype))


def launch_clustered(kernel, grid: tuple[int, int, int], cluster: int, extra_smem: int, device: torch.device,
                     *args, **kwargs) -> bool:
    """Launch ``kernel[grid](*args, cluster_smem=..., **kwargs)`` as clusters of ``cluster`` CTAs
    along axis 0 (``grid[0] * cluster`` CTAs there) with ``extra_smem`` bytes of shared memory for
    the kernel's own use at offset ``cluster_smem``. The first launch of a specialisation compiles
    the kernel (``warmup``) to learn its shared memory and marks the compiled kernel as clustered;
    later ones with the same arguments' fingerprint launch straight away (one dispatch instead of
    two: eager prefills launch ~160 of these a 13B forward). Returns False, launching nothing,
    where that memory cannot be had (the caller then launches without clusters)."""
    if cluster not in CLUSTER_SIZES:
        raise ValueError(f"cluster size {cluster} is not one of {CLUSTER_SIZES}")
    key = (kernel, cluster, extra_smem, device, tuple(map(_fingerprint, args)),
           tuple((name, _fingerprint(v)) for name, v in kwargs.items()))   # another order: one more warmup
    offset = _OFFSETS.get(key)
    if offset is None:
        offset = _prepare_clustered(kernel, grid, cluster, extra_smem, device, *args, **kwargs)
        if len(_OFFSETS) >= _MAX_OFFSETS:
            _OFFSETS.clear()
        _OFFSETS[key] = offset
    if offset < 0:
        return False
    kernel[grid](*args, cluster_smem=offset, **kwargs)
    return True


def _prepare_clustered(kernel, grid: tuple[int, int, int], cluster: int, extra_smem: int, device: torch.device,
                       *args, **kwargs) -> int:
    """Compile (or look up) the kernel for these arguments and set its launch metadata to clusters
    of ``cluster`` CTAs with ``extra_smem`` more bytes of shared memory; returns the byte offset of
    that memory, or -1 where the device cannot give it (nothing is changed then)."""
    compiled = kernel.warmup(*args, grid=grid, cluster_smem=0, **kwargs)
    shared = compiled.metadata.shared
    offset = -(-shared // 16) * 16   # mbarriers and 8-byte st.async want alignment
    total = offset + extra_smem
    if total > _smem_optin(device.index if device.index is not None else torch.cuda.current_device()) \
            or shared <= _DEFAULT_SMEM < total:
        return -1
    num_warps = compiled.packed_metadata[0]
    compiled.packed_metadata = (num_warps, cluster, total)   # this compiled kernel only runs clustered
    if SCHEDULING_POLICY != "spread":
        compiled._init_handles()
        compiled._run = _launcher_with_policy(compiled, SCHEDULING_POLICY) or compiled._run
    return offset


def _launcher_with_policy(compiled, policy: str):
    """Triton's launcher for ``compiled`` with the cluster scheduling policy it asks for replaced by
    ``policy`` (a key of ``SCHEDULING_POLICIES``), or None (logged) where this Triton's launcher source
    does not name the spread policy once: the stock launcher then stays."""
    if policy not in SCHEDULING_POLICIES:
        raise ValueError(f"cluster scheduling policy {policy!r} is not one of {sorted(SCHEDULING_POLICIES)}")
    from triton.backends.nvidia import driver as nvidia_driver
    stock = getattr(nvidia_driver, "make_launcher", None)
    spread = SCHEDULING_POLICIES["spread"]
    if stock is None:
        _warn_once("this Triton builds no launcher source per kernel; clusters launch with its own policy")
        return None
    found = []

    def make_launcher(*args, **kwargs):
        src = stock(*args, **kwargs)
        found.append(src.count(spread) == 1)
        return src.replace(spread, SCHEDULING_POLICIES[policy])

    with _LAUNCHER_LOCK:
        nvidia_driver.make_launcher = make_launcher
        try:
            launcher = driver.active.launcher_cls(compiled.src, compiled.metadata)
        finally:
            nvidia_driver.make_launcher = stock
    if found != [True]:
        _warn_once(f"this Triton's launcher does not name {spread} once; clusters launch with its own policy")
        return None
    return launcher


@lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    """Log ``message`` once a process (every clustered specialisation would repeat it)."""
    logger.warning(message)


# The PTX of the helpers below. ``cluster_tl`` wraps the same strings for plain Triton kernels.
SMEM_BASE_ASM = gl.constexpr("mov.b32 $0, global_smem;")
INIT_PUSH_BARRIER_ASM = gl.constexpr("""{
.reg .pred p;
.reg .b32 t;
mov.u32 t, %tid.x;
setp.eq.u32 p, t, 0;
@p mbarrier.init.shared::cta.b64 [$1], 1;
@p fence.mbarrier_init.release.cluster;
mov.b32 $0, 0;
}""")
ARRIVE_CLUSTER_ASM = gl.constexpr("barrier.cluster.arrive.relaxed.aligned; // $0")
WAIT_FOR_CLUSTER_ASM = gl.constexpr("barrier.cluster.wait.aligned; // $0")
WAIT_FOR_BYTES_ASM = gl.constexpr("""{
.reg .pred p, done;
.reg .b32 t;
.reg .b64 state;
mov.u32 t, %tid.x;
setp.eq.u32 p, t, 0;
@p mbarrier.arrive.expect_tx.shared::cta.b64 state, [$1], $2;
WAIT:
mbarrier.try_wait.parity.shared::cta.b64 done, [$1], 0;
@!done bra WAIT;
mov.b32 $0, 0;
}""")
LOAD_SHARED_ASM = gl.constexpr("ld.shared.f32 $0, [$1];")


@gluon.jit
def smem_address(offset):
    """The shared-memory address (shared window, 32 bits) ``offset`` bytes into ``global_smem``."""
    return gl.inline_asm_elementwise(SMEM_BASE_ASM, "=r", [], dtype=gl.int32, is_pure=True, pack=1) + offset


@gluon.jit
def init_push_barrier(bar):
    """At the kernel's start, thread 0: initialise the mbarrier at shared address ``bar`` (one
    arrival, plus the bytes expected) and fence the initialisation for the cluster. Every thread
    then arrives on the cluster barrier (``arrive_cluster``); ``wait_for_cluster`` waits later, by
    when every peer's mbarrier is long initialised."""
    gl.inline_asm_elementwise(INIT_PUSH_BARRIER_ASM, "=r,r", [bar], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def arrive_cluster():
    """Arrive on the cluster barrier without waiting (relaxed). Every thread of every CTA of the
    cluster must arrive before any ``wait_for_cluster`` returns: in a warp-specialised kernel each
    partition arrives at its start (code before ``warp_specialize`` runs in the default partition
    only)."""
    gl.inline_asm_elementwise(ARRIVE_CLUSTER_ASM, "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def wait_for_cluster():
    """Wait (acquire) for every thread of the cluster to have arrived (``arrive_cluster``)."""
    gl.inline_asm_elementwise(WAIT_FOR_CLUSTER_ASM, "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def push_pairs(addr, val, rank, bar):
    """``st.async`` two consecutive fp32 of a thread (``val``, 8-byte aligned consecutive addresses
    ``addr`` in this CTA's window) to the same addresses in the CTA of cluster rank ``rank``,
    completing that many bytes of its mbarrier at ``bar``: no memory barrier, and nothing for this
    CTA to wait for before it exits."""
    gl.inline_asm_elementwise("""{
.reg .b32 a, b;
mapa.shared::cluster.u32 a, $2, $6;
mapa.shared::cluster.u32 b, $8, $6;
st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [a], {$4, $5}, [b];
mov.b32 $0, 0;
mov.b32 $1, 0;
}""", "=r,=r,r,r,f,f,r,r,r,r", [addr, val, rank, bar], dtype=gl.int32, is_pure=False, pack=2)


@gluon.jit
def wait_for_bytes(bar, nbytes):
    """Thread 0 arrives on the mbarrier at ``bar`` expecting ``nbytes``; every thread then waits
    for its phase 0 to complete (the arrival and all the bytes), which makes them visible."""
    gl.inline_asm_elementwise(WAIT_FOR_BYTES_ASM, "=r,r,r", [bar, nbytes], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def load_shared(addr):
    """``ld.shared.f32`` at each address (not pure: it stays after the wait that makes it valid)."""
    return gl.inline_asm_elementwise(LOAD_SHARED_ASM, "=f,r", [addr], dtype=gl.float32, is_pure=False, pack=1)
