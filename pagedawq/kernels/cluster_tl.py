"""The thread-block-cluster helpers of ``clusters`` for plain Triton (``tl``) kernels.

Why: the split-KV decode kernel is a ``triton.jit`` kernel, and its splits can merge in the
shared memory of one CTA of their cluster (``paged_attention``'s clustered decode) the way the
GEMMs' K slices do (``clusters``): each split pushes its partial with ``st.async`` (counted by the
first CTA's mbarrier), so no reduce kernel, global workspace or memory barrier is needed. The PTX
is ``clusters``'; only the wrappers differ (``tl`` instead of Gluon).

A ``tl`` tensor's layout is the compiler's choice, and a value may be held by several threads at
once (a row vector broadcast over a 2-D layout). ``st.async`` counts bytes, so a push must come
from exactly one thread a value: ``push_pairs_where`` stores only where its predicate holds, and
the caller gives a predicate that one thread a value meets.
"""
from __future__ import annotations

import triton
import triton.language as tl

from pagedawq.kernels.clusters import (ARRIVE_CLUSTER_ASM, INIT_PUSH_BARRIER_ASM, LOAD_SHARED_ASM, SMEM_BASE_ASM,
                                       WAIT_FOR_BYTES_ASM, WAIT_FOR_CLUSTER_ASM)

# ``clusters.push_pairs`` with a predicate: an 8-byte pair goes out only where its first element's
# ``pred`` is non-zero.
_PUSH_PAIRS_WHERE_ASM = tl.constexpr("""{
.reg .b32 a, b;
.reg .pred p;
setp.ne.b32 p, $6, 0;
mapa.shared::cluster.u32 a, $2, $8;
mapa.shared::cluster.u32 b, $10, $8;
@p st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [a], {$4, $5}, [b];
mov.b32 $0, 0;
mov.b32 $1, 0;
}""")


@triton.jit
def smem_address(offset):
    """The shared-memory address (32 bits) ``offset`` bytes into ``global_smem``."""
    return tl.inline_asm_elementwise(SMEM_BASE_ASM, "=r", [], dtype=tl.int32, is_pure=True, pack=1) + offset


@triton.jit
def init_push_barrier(bar):
    """Thread 0 initialises the mbarrier at shared address ``bar`` (``clusters.init_push_barrier``)."""
    tl.inline_asm_elementwise(INIT_PUSH_BARRIER_ASM, "=r,r", [bar], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def arrive_cluster():
    """Arrive on the cluster barrier without waiting (``clusters.arrive_cluster``)."""
    tl.inline_asm_elementwise(ARRIVE_CLUSTER_ASM, "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def wait_for_cluster():
    """Wait for every thread of the cluster to have arrived (``clusters.wait_for_cluster``)."""
    tl.inline_asm_elementwise(WAIT_FOR_CLUSTER_ASM, "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def push_pairs_where(addr, val, pred, rank, bar):
    """Where ``pred``: ``st.async`` the fp32 pair at ``addr`` (8-byte aligned, consecutive in the
    thread's elements) to the same addresses in cluster rank ``rank``'s CTA, completing 8 bytes
    of its mbarrier at ``bar``. All arguments have ``val``'s shape."""
    tl.inline_asm_elementwise(_PUSH_PAIRS_WHERE_ASM, "=r,=r,r,r,f,f,r,r,r,r,r,r", [addr, val, pred, rank, bar],
                              dtype=tl.int32, is_pure=False, pack=2)


@triton.jit
def wait_for_bytes(bar, nbytes):
    """Thread 0 arrives expecting ``nbytes``; every thread waits for them (``clusters.wait_for_bytes``)."""
    tl.inline_asm_elementwise(WAIT_FOR_BYTES_ASM, "=r,r,r", [bar, nbytes], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def load_shared(addr):
    """``ld.shared.f32`` at each address (after the wait that makes it valid)."""
    return tl.inline_asm_elementwise(LOAD_SHARED_ASM, "=f,r", [addr], dtype=tl.float32, is_pure=False, pack=1)
