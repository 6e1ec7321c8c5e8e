"""Triton paged attention: one kernel for prefill / chunked prefill / mixed batches, and a
split-KV (flash-decoding) kernel plus a reduce kernel for decode-only batches.

Both compute ``pagedawq.attention.torch_backend.paged_attention_reference``: the new tokens of
each sequence attend causally to the sequence's whole context, read from the paged cache
``kv_cache [2, num_blocks, block_size, num_kv_heads, head_dim]`` through its block table.

Design notes (why it looks like this):

* **GQA packing.** A program owns one KV head and stacks the ``group = Hq / Hkv`` query heads that
  share it (padded to a power of two) into the rows of its query tile, so each K/V tile is loaded
  once per group instead of once per query head.
* **Prefill grid without host syncs.** Sequence ``i`` owns the tile indices starting at
  ``query_start_loc[i] // BLOCK_Q + i``; the grid ``num_tokens // BLOCK_Q + num_seqs`` bounds the
  total, and each program finds its sequence by binary search over ``query_start_loc`` on the
  device. Programs past a sequence's last tile exit at once.
* **Causal tiles.** KV tiles that every query of the tile may see run without masks (this is the
  whole cached prefix of a prefix-cache hit or a chunked prefill); only the tiles that cross the
  diagonal pay for the causal mask and bounds checks.
* **Decode splits.** A decode program reads a ``1/num_splits`` slice of one sequence's context
  for one KV head; a reduce kernel merges the slices' partial results by their log-sum-exp.
  The slice length is computed *in the kernel* from the sequence's length, so the grid
  ``(num_seqs, Hkv, num_splits)`` depends only on host integers: pass a fixed ``num_kv_splits``
  (e.g. ``choose_num_kv_splits(batch, Hkv, max_model_len)``) and the launch is CUDA-graph safe
  for any context length. With one split the decode kernel writes the output directly. On Hopper,
  4 splits run as one thread-block cluster and merge in its first CTA's shared memory instead
  (``decode_clusters``). The reduce kernel cost a 13B batch-1 decode step 50 µs on an
  H100 (1.25 µs a layer; ``benchmarks/RESULTS.md`` "Session 39", measured by dropping it), and
  clusters of 4 got back 36 µs of it ("Session 40"). Clusters of 8, and of 2 at batch 8, cost
  more than the reduce ("Session 41").
* **Decode rotary.** Given the step's rotary inputs (``decode_attention(..., rotary=...)``), the decode
  kernel rotates its query heads in registers and the program whose split holds the new token
  rotates that token's key and writes it and its value to the cache before reading its keys:
  one launch a layer fewer than the separate rotary + cache-write kernel, which prefill keeps.
  Same roundings as that kernel, so the cache gets the same bits. The output has them too, except
  in fp16 on a GPU: Triton packs the q . k operands of a q from registers in another order.

All softmax arithmetic is float32 (online softmax in base 2); dots take fp16/bf16 operands with
float32 accumulation, or exact float32 (``input_precision="ieee"``) for float32 inputs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.kernels.cluster_tl import (arrive_cluster, init_push_barrier, load_shared, push_pairs_where,
                                         smem_address, wait_for_bytes, wait_for_cluster)
from pagedawq.kernels.clusters import launch_clustered
from pagedawq.kernels.fused_ops import rotary_cos_sin, rotate_halves
from pagedawq.kernels.interpreter import compiled_sm90
from pagedawq.kernels.pdl import pdl_launch, pdl_start

_LOG2E = 1.4426950408889634
# A decode split should read at least this many tokens, or the reduce costs more than it saves.
MIN_TOKENS_PER_SPLIT = 128
MAX_KV_SPLITS = 32
# Split counts whose splits merge in a thread-block cluster on Hopper (``decode_clusters``). The 13B
# batch-1 graph of the 128-token bucket (4 splits) took 14 µs less on an H100 with them than with the
# reduce kernel, and its engine step 36 µs less; the 256 bucket (8 splits) took 52 µs more (graph)
# and 41 µs more (step; benchmarks/RESULTS.md "Session 40"), so 8 keep the reduce. At batch 8 (2
# splits) the 13B step took 14-21 µs more with clusters of 2 at contexts up to 256 tokens, while batch
# 4 (4 splits) took 22-52 µs less ("Session 41"), so 2 keep the reduce too.
DECODE_CLUSTER_SIZES = (4,)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _attend_tile(acc, m_i, l_i, q, cache_ptr, block_table_ptr, kv_start, kv_end, q_pos, kv_head,
                 qk_scale, stride_c_kv, stride_c_block, stride_c_slot, stride_c_head, dims,
                 BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
                 MASK_DIM: tl.constexpr, CAUSAL: tl.constexpr, MASK_KV: tl.constexpr, IEEE: tl.constexpr):
    """One online-softmax step of the query tile ``q [M, D]`` over keys ``[kv_start, kv_start+BLOCK_N)``.

    ``MASK_KV`` guards loads (and, without ``CAUSAL``, scores) against keys at or past ``kv_end``;
    ``CAUSAL`` hides keys after each row's absolute position ``q_pos``; ``MASK_DIM`` is set when
    ``dims`` is padded past ``HEAD_DIM``.
    """
    kv_idx = kv_start + tl.arange(0, BLOCK_N)
    kv_mask = kv_idx < kv_end
    if MASK_KV:
        block = tl.load(block_table_ptr + kv_idx // PAGE_SIZE, mask=kv_mask, other=0)
    else:
        block = tl.load(block_table_ptr + kv_idx // PAGE_SIZE)
    offs = block.to(tl.int64) * stride_c_block + (kv_idx % PAGE_SIZE) * stride_c_slot + kv_head * stride_c_head
    k_mask = kv_mask[None, :]
    v_mask = kv_mask[:, None]
    if MASK_DIM:
        k_mask = k_mask & (dims[:, None] < HEAD_DIM)
        v_mask = v_mask & (dims[None, :] < HEAD_DIM)
    if MASK_KV or MASK_DIM:
        k = tl.load(cache_ptr + offs[None, :] + dims[:, None], mask=k_mask, other=0.0)
    else:
        k = tl.load(cache_ptr + offs[None, :] + dims[:, None])
    s = _dot(q, k, IEEE) * qk_scale
    if CAUSAL:
        s = tl.where(kv_idx[None, :] <= q_pos[:, None], s, float("-inf"))
    elif MASK_KV:
        s = tl.where(kv_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if MASK_KV or MASK_DIM:
        v = tl.load(cache_ptr + stride_c_kv + offs[:, None] + dims[None, :], mask=v_mask, other=0.0)
    else:
        v = tl.load(cache_ptr + stride_c_kv + offs[:, None] + dims[None, :])
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
    return acc, m_new, l_i


@triton.jit
def _prefill_kernel(
    out_ptr, q_ptr, cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_loc_ptr,
    num_seqs, qk_scale,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_c_kv, stride_c_block, stride_c_slot, stride_c_head, stride_bt,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr,
    IEEE: tl.constexpr, PDL: tl.constexpr,
):
    pdl_start(PDL)
    tile = tl.program_id(0)
    kv_head = tl.program_id(1)
    # The sequence owning this tile: the last i with query_start_loc[i] // BLOCK_Q + i <= tile.
    lo = tl.full([], 0, tl.int32)
    hi = tl.full([], 0, tl.int32) + num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid <= tile:
            lo = mid + 1
        else:
            hi = mid
    seq = lo - 1
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    q_first = (tile - (q_start // BLOCK_Q + seq)) * BLOCK_Q
    if q_first >= q_len:
        return
    ctx_len = tl.load(seq_lens_ptr + seq) - q_len

    rows = tl.arange(0, BLOCK_M)
    dims = tl.arange(0, DIM_PAD)
    q_idx = q_first + rows // GROUP_PAD
    head = kv_head * GROUP + rows % GROUP_PAD
    row_mask = (q_idx < q_len) & (rows % GROUP_PAD < GROUP)
    io_mask = row_mask[:, None] & (dims[None, :] < HEAD_DIM)
    token = (q_start + q_idx).to(tl.int64)
    q = tl.load(q_ptr + (token * stride_qt + head * stride_qh)[:, None] + dims[None, :], mask=io_mask, other=0.0)
    q_pos = ctx_len + q_idx

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_PAD], tl.float32)
    block_table_ptr = block_tables_ptr + seq.to(tl.int64) * stride_bt
    kv_end = ctx_len + tl.minimum(q_first + BLOCK_Q, q_len)   # one past the tile's last visible key
    num_unmasked = (ctx_len + q_first + 1) // BLOCK_N           # tiles every row of this tile sees whole
    for j in range(0, num_unmasked):
        acc, m_i, l_i = _attend_tile(
            acc, m_i, l_i, q, cache_ptr, block_table_ptr, j * BLOCK_N, kv_end, q_pos, kv_head, qk_scale,
            stride_c_kv, stride_c_block, stride_c_slot, stride_c_head, dims,
            BLOCK_N, PAGE_SIZE, HEAD_DIM, HEAD_DIM != DIM_PAD, False, False, IEEE)
    for j in range(num_unmasked, tl.cdiv(kv_end, BLOCK_N)):
        acc, m_i, l_i = _attend_tile(
            acc, m_i, l_i, q, cache_ptr, block_table_ptr, j * BLOCK_N, kv_end, q_pos, kv_head, qk_scale,
            stride_c_kv, stride_c_block, stride_c_slot, stride_c_head, dims,
            BLOCK_N, PAGE_SIZE, HEAD_DIM, HEAD_DIM != DIM_PAD, True, True, IEEE)
    # Every row sees key 0, so l_i > 0.
    acc = acc / l_i[:, None]
    tl.store(out_ptr + (token * stride_ot + head * stride_oh)[:, None] + dims[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=io_mask)


@triton.jit
def _rotate(x1, x2, cos, sin):
    """``fused_ops.rotate_halves`` of a head's halves ``x1, x2`` ([..., HALF]) by ``cos, sin``
    ([HALF], float32), returned joined, [..., 2 HALF]."""
    r1, r2 = rotate_halves(x1, x2, cos, sin)
    joined = tl.permute(tl.join(r1, r2), (0, 2, 1))   # [..., 2, HALF]: halves in order
    return tl.reshape(joined, (joined.shape[0], 2 * joined.shape[2]))


@triton.jit(do_not_specialize=["cluster_smem"])
def _decode_kernel(
    out_ptr, part_out_ptr, part_lse_ptr, q_ptr, cache_ptr, block_tables_ptr, seq_lens_ptr,
    num_q_heads, qk_scale,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_c_kv, stride_c_block, stride_c_slot, stride_c_head, stride_bt,
    positions_ptr, cos_sin_ptr, k_ptr, v_ptr, slot_mapping_ptr, stride_cs, stride_kt, stride_vt,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr, IEEE: tl.constexpr,
    PDL: tl.constexpr, ROTARY: tl.constexpr = False, CLUSTER: tl.constexpr = 1, cluster_smem=0,
):
    """One (sequence, KV head, split) of a decode batch. With ``ROTARY`` (``HEAD_DIM`` a power of
    two), q is read unrotated and rotated here, and the program whose split holds the new token
    (position ``seq_len - 1``) first writes its rotated key and its value at its slot (-1: none).
    With ``CLUSTER`` (= ``NUM_SPLITS``) the splits of a (sequence, KV head) are one thread-block
    cluster along axis 0 and merge in its first CTA (``_merge_splits_in_cluster``), which writes
    the output: no partials in global memory and no reduce kernel. Without, the kernel compiles
    exactly as before clusters existed (sm_90 SASS compared instruction for instruction, session
    40). Keep it so: an earlier version that reordered the program ids and the epilogue compiled
    differently, and its builds measured up to 24 µs slower on a 13B step at 14 splits."""
    if CLUSTER > 1:
        init_push_barrier(smem_address(cluster_smem))
        arrive_cluster()
    pdl_start(PDL)
    if CLUSTER > 1:   # the splits of a (sequence, KV head) are one cluster along axis 0
        seq = tl.program_id(0) // CLUSTER
        kv_head = tl.program_id(1)
        split = tl.program_id(0) % CLUSTER
    else:
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
        split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    # Split lengths are whole tiles so that only a split's last tile needs masking.
    split_len = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    kv_start = split * split_len
    kv_end = tl.minimum(kv_start + split_len, seq_len)

    rows = tl.arange(0, BLOCK_H)
    dims = tl.arange(0, DIM_PAD)
    head = kv_head * GROUP + rows
    io_mask = (rows < GROUP)[:, None] & (dims[None, :] < HEAD_DIM)
    token = seq.to(tl.int64)   # one new token a sequence: no load of query_start_loc on the way to q
    if ROTARY:
        HALF: tl.constexpr = HEAD_DIM // 2
        half = tl.arange(0, HALF)
        cos, sin = rotary_cos_sin(positions_ptr, token, cos_sin_ptr, stride_cs, HALF, HALF)
        q_row = q_ptr + token * stride_qt + (head * stride_qh)[:, None] + half[None, :]
        h_mask = (rows < GROUP)[:, None]
        q = _rotate(tl.load(q_row, mask=h_mask, other=0.0), tl.load(q_row + HALF, mask=h_mask, other=0.0),
                    cos[None, :], sin[None, :])
        slot = tl.load(slot_mapping_ptr + token)
        if (seq_len > 0) & (split == (seq_len - 1) // tl.maximum(split_len, 1)) & (slot >= 0):
            k_row = k_ptr + token * stride_kt + kv_head * HEAD_DIM + half[None, :]
            k = _rotate(tl.load(k_row), tl.load(k_row + HALF), cos[None, :], sin[None, :])
            dst = cache_ptr + (slot // PAGE_SIZE) * stride_c_block + (slot % PAGE_SIZE) * stride_c_slot \
                + kv_head * stride_c_head + dims[None, :]
            tl.store(dst, k.to(cache_ptr.dtype.element_ty))
            v = tl.load(v_ptr + token * stride_vt + kv_head * HEAD_DIM + dims[None, :])
            tl.store(dst + stride_c_kv, v.to(cache_ptr.dtype.element_ty))
            tl.debug_barrier()   # the key and value written, by every thread, before the loop reads them
    else:
        q = tl.load(q_ptr + token * stride_qt + (head * stride_qh)[:, None] + dims[None, :], mask=io_mask,
                    other=0.0)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, DIM_PAD], tl.float32)
    block_table_ptr = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for start in range(kv_start, kv_end, BLOCK_N):
        acc, m_i, l_i = _attend_tile(
            acc, m_i, l_i, q, cache_ptr, block_table_ptr, start, kv_end, rows, kv_head, qk_scale,
            stride_c_kv, stride_c_block, stride_c_slot, stride_c_head, dims,
            BLOCK_N, PAGE_SIZE, HEAD_DIM, HEAD_DIM != DIM_PAD, False, True, IEEE)
    # An empty split (or a padded sequence of length 0) has l_i == 0: it contributes nothing.
    has_keys = l_i > 0
    acc = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    if NUM_SPLITS == 1:
        tl.store(out_ptr + token * stride_ot + (head * stride_oh)[:, None] + dims[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=io_mask)
    elif CLUSTER == 1:
        part = (seq * num_q_heads + head).to(tl.int64) * NUM_SPLITS + split
        tl.store(part_out_ptr + (part * HEAD_DIM)[:, None] + dims[None, :], acc, mask=io_mask)
        tl.store(part_lse_ptr + part, _split_lse(m_i, l_i, has_keys), mask=rows < GROUP)
    else:
        _merge_splits_in_cluster(acc, _split_lse(m_i, l_i, has_keys),
                                 out_ptr + token * stride_ot + (head * stride_oh)[:, None] + dims[None, :],
                                 rows, dims, split, cluster_smem, GROUP, HEAD_DIM, DIM_PAD, CLUSTER)


@triton.jit
def _split_lse(m_i, l_i, has_keys):
    """A split's log-sum-exp (base 2) from its running max and sum; -inf where it has no keys."""
    return tl.where(has_keys, m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))


@triton.jit
def _merge_splits_in_cluster(acc, lse, out_rows, rows, dims, split, cluster_smem, GROUP: tl.constexpr,
                             HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, CLUSTER: tl.constexpr):
    """Split ``split`` of a cluster's splits (one CTA each) hands its normalised partial ``acc``
    [BLOCK_H, DIM_PAD] and log-sum-exp ``lse`` [BLOCK_H] (rows below ``GROUP`` are real) to split
    0, which merges them as ``_reduce_splits_kernel`` does and stores the result at ``out_rows``.

    Split 0's shared memory past the kernel's own (``cluster_smem``): the mbarrier that counts the
    pushed bytes (``decode_cluster_smem_bytes``), then the partials [CLUSTER - 1, GROUP, DIM_PAD] and
    the log-sum-exps as pairs [CLUSTER - 1, GROUP, 2] (fp32). Each value is pushed by the one thread
    that holds it in ``acc``'s layout (the log-sum-exp from the thread of column 0), and padding
    rows and columns are not pushed: the bytes are what split 0 waits for."""
    bar = smem_address(cluster_smem)
    parts = bar + 16
    lses = parts + (CLUSTER - 1) * GROUP * DIM_PAD * 4
    row = tl.where(rows < GROUP, rows, 0)   # padding rows read row 0's slot; they are not stored
    wait_for_cluster()   # split 0's mbarrier is initialised
    if split > 0:
        slot = (split - 1) * GROUP + row
        zero = tl.zeros([acc.shape[0], acc.shape[1]], tl.int32)
        real = (rows < GROUP)[:, None] & (dims < HEAD_DIM)[None, :]
        push_pairs_where(parts + (slot[:, None] * DIM_PAD + dims[None, :]) * 4, acc, real.to(tl.int32), zero,
                         bar + zero)
        first = (rows < GROUP)[:, None] & (dims == 0)[None, :]
        # lse broadcast into acc's layout (+ acc * 0), so that its column-0 thread is the one pusher
        push_pairs_where(lses + (slot[:, None] * 2 + dims[None, :]) * 4, lse[:, None] + acc * 0.0,
                         first.to(tl.int32), zero, bar + zero)
    else:
        wait_for_bytes(bar, (CLUSTER - 1) * GROUP * (HEAD_DIM + 2) * 4)
        m = lse
        for s in tl.static_range(CLUSTER - 1):
            m = tl.maximum(m, load_shared(lses + (s * GROUP + row) * 8))
        m = tl.where(m == float("-inf"), 0.0, m)
        total = tl.math.exp2(lse - m)
        merged = acc * total[:, None]
        for s in tl.static_range(CLUSTER - 1):
            weight = tl.math.exp2(load_shared(lses + (s * GROUP + row) * 8) - m)
            total += weight
            merged += load_shared(parts + ((s * GROUP + row)[:, None] * DIM_PAD + dims[None, :]) * 4) * weight[:, None]
        merged = merged / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(out_rows, merged.to(out_rows.dtype.element_ty),
                 mask=(rows < GROUP)[:, None] & (dims[None, :] < HEAD_DIM))


@triton.jit
def _reduce_splits_kernel(
    out_ptr, part_out_ptr, part_lse_ptr, num_q_heads, stride_ot, stride_oh,
    NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl_start(PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_PAD)
    dims = tl.arange(0, DIM_PAD)
    split_mask = splits < NUM_SPLITS
    part = (seq * num_q_heads + head).to(tl.int64) * NUM_SPLITS + splits
    lse = tl.load(part_lse_ptr + part, mask=split_mask, other=float("-inf"))
    m = tl.max(lse, 0)
    weight = tl.math.exp2(lse - tl.where(m == float("-inf"), 0.0, m))
    o = tl.load(part_out_ptr + (part * HEAD_DIM)[:, None] + dims[None, :],
                mask=split_mask[:, None] & (dims[None, :] < HEAD_DIM), other=0.0)
    total = tl.sum(weight, 0)
    result = tl.sum(weight[:, None] * o, 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq.to(tl.int64) * stride_ot + head * stride_oh + dims, result.to(out_ptr.dtype.element_ty),
             mask=dims < HEAD_DIM)


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def choose_num_kv_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int | None = None) -> int:
    """How many KV splits the decode kernel should use.

    Enough (seq, kv head, split) programs to give every SM about four (on an H100, batch-1 decode
    reads KV 25% faster with 16 splits than with 4, and a batch of 64 x 32 heads is fastest
    unsplit), but no split shorter than ``MIN_TOKENS_PER_SPLIT`` tokens, at most
    ``MAX_KV_SPLITS``. Large batches get 1 split (no reduce kernel).

    The result depends only on the arguments, so for CUDA-graph capture call it with the captured
    batch size and ``max_model_len`` (an upper bound of every ``seq_len``) and pass the result as
    ``num_kv_splits``: the grid then never changes between replays.
    ``num_sms`` defaults to the current CUDA device's multiprocessor count (132 without CUDA).
    """
    if num_sms is None:
        num_sms = _num_sms(torch.cuda.current_device()) if torch.cuda.is_available() else 132
    wanted = triton.cdiv(4 * num_sms, max(1, num_seqs * num_kv_heads))
    by_length = triton.cdiv(max(1, max_seq_len), MIN_TOKENS_PER_SPLIT)
    return max(1, min(wanted, by_length, MAX_KV_SPLITS))


def _cache_strides(kv_cache: torch.Tensor) -> tuple[int, int, int, int]:
    if kv_cache.dim() != 5 or kv_cache.shape[0] != 2 or kv_cache.stride(-1) != 1:
        raise ValueError("kv_cache must be [2, num_blocks, block_size, num_kv_heads, head_dim] "
                         "with a contiguous head dimension")
    return kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3)


def _prepare(q: torch.Tensor, kv_cache: torch.Tensor, out: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    if kv_cache.shape[4] != head_dim or num_q_heads % num_kv_heads != 0:
        raise ValueError(f"q heads/dim {tuple(q.shape[1:])} incompatible with cache {tuple(kv_cache.shape)}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.stride(-1) != 1:
        raise ValueError(f"out must be {tuple(q.shape)} with a contiguous last dimension")
    return q, out, num_q_heads // num_kv_heads


def prefill_attention(q: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata, scale: float,
                      out: torch.Tensor | None = None, *, block_m: int | None = None, block_n: int | None = None,
                      num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """Attention for any batch (prefill, chunked prefill with a cached prefix, decode, or a mix).

    The tuning arguments default to values chosen for the batch shape (``block_m`` rows of
    query heads x tokens per program, ``block_n`` keys per tile); the benchmark overrides them.
    """
    q, out, group = _prepare(q, kv_cache, out)
    num_tokens, num_seqs = q.shape[0], metadata.num_seqs
    if num_tokens == 0 or num_seqs == 0:
        return out
    head_dim, page_size, num_kv_heads = q.shape[2], kv_cache.shape[2], kv_cache.shape[3]
    group_pad = triton.next_power_of_2(group)
    on_gpu = q.is_cuda
    if block_m is None:
        # Rows beyond a short query are wasted work: a batch of short queries gets 16-row tiles.
        # 64 x 64 tiles with 4 warps beat 128-row tiles on H100 (benchmarks/notes/attention_kernels.md).
        block_m = 16 if metadata.max_query_len * group_pad <= 16 or not on_gpu else 64
    block_m = max(block_m, group_pad)
    if block_n is None:
        block_n = 64 if on_gpu else 16
    if num_warps is None:
        num_warps = 8 if block_m >= 128 and head_dim > 64 else 4
    if num_stages is None:
        num_stages = 2
    block_q = block_m // group_pad
    grid = (num_tokens // block_q + num_seqs, num_kv_heads)
    _prefill_kernel[grid](
        out, q, kv_cache, metadata.block_tables, metadata.seq_lens, metadata.query_start_loc,
        num_seqs, scale * _LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        *_cache_strides(kv_cache), metadata.block_tables.stride(0),
        GROUP=group, GROUP_PAD=group_pad, BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_N=block_n,
        PAGE_SIZE=page_size, HEAD_DIM=head_dim, DIM_PAD=triton.next_power_of_2(head_dim),
        IEEE=q.dtype == torch.float32, num_warps=num_warps, num_stages=num_stages, **pdl_launch(q.device, num_tokens),
    )
    return out


@dataclass(frozen=True)
class DecodeRotary:
    """The new tokens' rotary inputs and keys and values, for ``decode_attention`` to rotate q and
    the keys itself and write the keys and values to the cache (``rotary_fusable`` says when)."""
    positions: torch.Tensor       # [T]
    cos_sin_cache: torch.Tensor   # [max_position, D]: cos then sin (neox)
    k: torch.Tensor               # [T, Hkv, D], unrotated
    v: torch.Tensor               # [T, Hkv, D]


def _packed_heads(x: torch.Tensor) -> bool:
    return x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]


def rotary_fusable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """Whether the decode kernel can take the rotary and the cache write (``DecodeRotary``): a
    power-of-two head size (its halves are whole tiles) and the keys and values of each token
    with their heads packed (any row stride), as the fused QKV output has them."""
    d = q.shape[-1]
    return (d >= 16 and d & (d - 1) == 0 and q.stride(-1) == 1 and _packed_heads(k) and _packed_heads(v)
            and k.shape[1:] == v.shape[1:] == tuple(kv_cache.shape[3:]))


def decode_block_n(group: int, num_kv_splits: int) -> int:
    """Keys per tile of the decode kernel on a GPU, for ``group`` query heads a KV head.

    32 for split contexts without GQA, else 64. A split's length is a whole number of tiles, so
    at short contexts the smaller tile spreads the keys over twice the programs, each with half
    the tile (sm_90, Triton 3.6: 80 registers and 21 KB of shared memory against 88 and 39 KB).
    That is 7-11% faster wherever splits make programs short and many (H100, 2026-11-27,
    ``benchmarks/attention.py --decode-block-n 16 32``: batch 1 at 2048 tokens 20.5 -> 18.3 us,
    batch 8 at 4096 221 -> 196 us; the 13B AWQ batch-1 decode graph 3.15 -> 3.09 ms at TP=1,
    2.08 -> 2.06 at TP=2). Unsplit (a large batch: 726 -> 768 us at 64 x 2048) and with GQA
    (8192 tokens, 8 KV heads: 22.5 -> 24.0 us) the 64-key tile stays ahead."""
    return 32 if group == 1 and num_kv_splits > 1 else 64


def decode_attention(q: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata, scale: float,
                     out: torch.Tensor | None = None, *, num_kv_splits: int | None = None,
                     block_n: int | None = None, num_warps: int | None = None,
                     num_stages: int | None = None, rotary: DecodeRotary | None = None) -> torch.Tensor:
    """Split-KV attention for a batch whose every sequence has exactly one new token, so row ``i``
    of q is sequence ``i``'s (the kernels take it so rather than load ``query_start_loc``: one
    dependent load less at the head of every program).

    ``num_kv_splits`` defaults to ``choose_num_kv_splits(num_seqs, Hkv, metadata.max_seq_len)``,
    which changes with the batch's longest context: under CUDA graphs pass a fixed value instead
    (see the module docstring). Any value >= 1 gives the same result.

    With ``rotary`` (where ``rotary_fusable``), q and the new keys are unrotated: the kernel
    rotates them and writes the new keys and values at ``metadata.slot_mapping`` first, with the
    bits of ``cache_ops.rotary_embedding_write_kv_cache`` followed by this function (q is not
    rotated in place, which nothing after attention reads)."""
    if rotary is not None and not rotary_fusable(q, rotary.k, rotary.v, kv_cache):
        raise ValueError("decode_attention cannot rotate these q/k/v (see rotary_fusable)")
    q, out, group = _prepare(q, kv_cache, out)
    num_seqs = metadata.num_seqs
    if q.shape[0] != num_seqs:
        raise ValueError(f"decode_attention needs one new token a sequence: {q.shape[0]} query rows for "
                         f"{num_seqs} sequences")
    if num_seqs == 0:
        return out
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    page_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    if num_kv_splits is None:
        num_sms = _num_sms(q.device.index if q.device.index is not None else torch.cuda.current_device()) \
            if q.is_cuda else None
        num_kv_splits = choose_num_kv_splits(num_seqs, num_kv_heads, metadata.max_seq_len, num_sms)
    if num_kv_splits < 1:
        raise ValueError(f"num_kv_splits must be >= 1, got {num_kv_splits}")
    if block_n is None:
        block_n = decode_block_n(group, num_kv_splits) if q.is_cuda else 16
    dim_pad = triton.next_power_of_2(head_dim)
    pdl = pdl_launch(q.device, num_seqs)
    r = rotary
    args = (q, kv_cache, metadata.block_tables, metadata.seq_lens, num_q_heads, scale * _LOG2E,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1),
            *_cache_strides(kv_cache), metadata.block_tables.stride(0),
            *((r.positions, r.cos_sin_cache, r.k, r.v, metadata.slot_mapping, r.cos_sin_cache.stride(0),
               r.k.stride(0), r.v.stride(0)) if r is not None else (q, q, q, q, q, 0, 0, 0)))
    consts = dict(GROUP=group, BLOCK_H=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n, PAGE_SIZE=page_size,
                  HEAD_DIM=head_dim, DIM_PAD=dim_pad, NUM_SPLITS=num_kv_splits, IEEE=q.dtype == torch.float32,
                  ROTARY=r is not None, **pdl, num_warps=num_warps or 4, num_stages=num_stages or 2)
    if decode_clusters(q.device, num_kv_splits) and launch_clustered(
            _decode_kernel, (num_seqs, num_kv_heads, 1), num_kv_splits,
            decode_cluster_smem_bytes(group, dim_pad, num_kv_splits), q.device, out, out, out, *args,
            CLUSTER=num_kv_splits, **consts):
        return out
    if num_kv_splits > 1:
        part_out = torch.empty((num_seqs, num_q_heads, num_kv_splits, head_dim), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((num_seqs, num_q_heads, num_kv_splits), dtype=torch.float32, device=q.device)
    else:
        part_out = part_lse = out  # not read or written with one split
    _decode_kernel[(num_seqs, num_kv_heads, num_kv_splits)](out, part_out, part_lse, *args, **consts)
    if num_kv_splits > 1:
        _reduce_splits_kernel[(num_seqs, num_q_heads)](
            out, part_out, part_lse, num_q_heads, out.stride(0), out.stride(1),
            NUM_SPLITS=num_kv_splits, SPLITS_PAD=triton.next_power_of_2(num_kv_splits),
            HEAD_DIM=head_dim, DIM_PAD=dim_pad, num_warps=4 if dim_pad >= 128 else 2, **pdl,
        )
    return out


@functools.lru_cache(maxsize=None)
def _clusters_available(device: torch.device) -> bool:
    return compiled_sm90(device, "PAGEDAWQ_DISABLE_DECODE_CLUSTERS")


def decode_clusters(device: torch.device, num_kv_splits: int) -> bool:
    """Whether a decode launch of ``num_kv_splits`` splits on ``device`` merges them in thread-block
    clusters (``_merge_splits_in_cluster``) instead of the reduce kernel: on Hopper and later, at
    ``DECODE_CLUSTER_SIZES`` splits (others keep the reduce), unless
    ``PAGEDAWQ_DISABLE_DECODE_CLUSTERS=1`` (read once a process and device)."""
    return num_kv_splits in DECODE_CLUSTER_SIZES and _clusters_available(device)


def decode_cluster_smem_bytes(group: int, dim_pad: int, cluster: int) -> int:
    """Shared memory the first CTA of a decode cluster needs past the kernel's own: the mbarrier (16
    bytes), the other splits' partials and their log-sum-exp pairs (``_merge_splits_in_cluster``)."""
    return 16 + (cluster - 1) * group * (dim_pad + 2) * 4


def paged_attention(q: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata, scale: float,
                    out: torch.Tensor | None = None, *, num_kv_splits: int | None = None) -> torch.Tensor:
    """Causal attention of ``q [T, Hq, D]`` over each sequence's paged context -> ``[T, Hq, D]``.

    Decode-only batches (``metadata.max_query_len == 1``) take the split-KV decode kernel with
    ``num_kv_splits`` splits (see ``decode_attention``); every other batch takes the prefill kernel.
    Grid sizes come from host integers only, so the call never syncs with the device.
    """
    if metadata.is_decode_only:
        return decode_attention(q, kv_cache, metadata, scale, out, num_kv_splits=num_kv_splits)
    return prefill_attention(q, kv_cache, metadata, scale, out)
