"""Paged attention in plain torch: the CPU path and the reference for the GPU kernels."""
from __future__ import annotations

import torch

from pagedawq.attention.backend import AttentionBackend, register_backend
from pagedawq.attention.metadata import AttentionMetadata


def write_kv_cache(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Scatter new keys/values ``[T, Hkv, D]`` into their cache slots; slot -1 is skipped."""
    num_kv_heads, head_dim = kv_cache.shape[-2:]
    flat = kv_cache.view(2, -1, num_kv_heads, head_dim)
    valid = slot_mapping >= 0
    if not bool(valid.all()):
        k, v, slot_mapping = k[valid], v[valid], slot_mapping[valid]
    # index_copy_/index_select on the K or V half: mixed basic+advanced indexing of the whole
    # cache tensor costs milliseconds on CPU.
    flat[0].index_copy_(0, slot_mapping, k.to(flat.dtype))
    flat[1].index_copy_(0, slot_mapping, v.to(flat.dtype))


def gather_context(kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[seq_len, Hkv, D]`` of one sequence, read through its block table."""
    block_size = kv_cache.shape[2]
    n_blocks = (seq_len + block_size - 1) // block_size
    blocks = block_table[:n_blocks].long()
    k = kv_cache[0].index_select(0, blocks).flatten(0, 1)[:seq_len]
    v = kv_cache[1].index_select(0, blocks).flatten(0, 1)[:seq_len]
    return k, v


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Masked attention with grouped KV heads: ``q [B, Lq, Hq, D]``, ``k, v [B, L, Hkv, D]``,
    ``mask [B, Lq, L]`` (True = may attend) -> ``[B, Lq, Hq, D]``. Scores and softmax in float32.

    Written with plain matmuls: on CPU this is much faster than ``scaled_dot_product_attention``
    for the short query blocks of decoding, and it is an unambiguous reference. The G query heads
    of a KV head are rows of one matrix product against that head's keys (``[G Lq, D] @ [D, L]``),
    so each key is read once, not broadcast and copied G times (2-2.5x faster at batch 32)."""
    b, lq, hq, d = q.shape
    hkv = k.shape[2]
    g = hq // hkv
    qg = q.view(b, lq, hkv, g, d).permute(0, 2, 3, 1, 4).reshape(b, hkv, g * lq, d)   # [B, Hkv, G Lq, D]
    kt = k.permute(0, 2, 3, 1)                                                         # [B, Hkv, D, L]
    scores = torch.matmul(qg, kt.to(q.dtype)).float() * scale                          # [B, Hkv, G Lq, L]
    scores = scores.view(b, hkv, g, lq, -1).masked_fill(~mask[:, None, None], float("-inf"))
    probs = scores.softmax(dim=-1).to(v.dtype).view(b, hkv, g * lq, -1)
    out = torch.matmul(probs, v.permute(0, 2, 1, 3))                                   # [B, Hkv, G Lq, D]
    return out.view(b, hkv, g, lq, d).permute(0, 3, 1, 2, 4).reshape(b, lq, hq, d).to(q.dtype)


def _decode_plan(metadata: AttentionMetadata, block_size: int, device: torch.device):
    """Rows, cache block indices and mask of the batch's single-token sequences (None if none),
    computed once per forward and shared by every layer."""
    if "decode" in metadata.backend_state:
        return metadata.backend_state["decode"]
    plan = None
    decode_rows = [i for i, n in enumerate(metadata.query_lens_cpu) if n == 1]
    if decode_rows:
        if len(decode_rows) == metadata.num_seqs:
            token_idx = rows = slice(None)
        else:
            starts = metadata.query_starts_cpu
            rows = torch.tensor(decode_rows, device=device)
            token_idx = torch.tensor([starts[i] for i in decode_rows], device=device)
        max_len = max(metadata.seq_lens_cpu[i] for i in decode_rows)
        n_blocks = -(-max_len // block_size)
        blocks = metadata.block_tables[rows][:, :n_blocks].long().flatten()
        mask = torch.arange(max_len, device=device)[None, :] < metadata.seq_lens[rows].long()[:, None]
        plan = (token_idx, blocks, n_blocks, max_len, mask)
    metadata.backend_state["decode"] = plan
    return plan


def _prefill_plan(metadata: AttentionMetadata, device: torch.device) -> list:
    """Per multi-token sequence: (first token, query length, context length, causal mask)."""
    if "prefill" not in metadata.backend_state:
        plan = []
        starts = metadata.query_starts_cpu
        for i, (q_len, seq_len) in enumerate(zip(metadata.query_lens_cpu, metadata.seq_lens_cpu)):
            if q_len <= 1:
                continue
            # Query j sits at absolute position seq_len - q_len + j and sees keys up to there.
            q_pos = torch.arange(seq_len - q_len, seq_len, device=device)
            mask = torch.arange(seq_len, device=device)[None, :] <= q_pos[:, None]
            plan.append((i, starts[i], q_len, seq_len, mask))
        metadata.backend_state["prefill"] = plan
    return metadata.backend_state["prefill"]


def paged_attention_reference(q: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata,
                              scale: float) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole cached context.

    Single-token (decode) sequences are batched into one padded attention; prefill chunks go one
    sequence at a time. Indices and masks depend only on the batch and are built once per forward.
    """
    out = torch.empty_like(q)
    block_size = kv_cache.shape[2]
    decode = _decode_plan(metadata, block_size, q.device)
    if decode is not None:
        token_idx, blocks, n_blocks, max_len, mask = decode
        shape = (-1, n_blocks * block_size) + tuple(kv_cache.shape[3:])
        k = kv_cache[0].index_select(0, blocks).view(shape)[:, :max_len]
        v = kv_cache[1].index_select(0, blocks).view(shape)[:, :max_len]
        # Padding slots hold whatever the blocks held (possibly NaN): zero them, as 0 * NaN = NaN.
        v = v.masked_fill(~mask[:, :, None, None], 0)
        out[token_idx] = attend(q[token_idx].unsqueeze(1), k, v, mask.unsqueeze(1), scale).squeeze(1)
    for i, start, q_len, seq_len, mask in _prefill_plan(metadata, q.device):
        k, v = gather_context(kv_cache, metadata.block_tables[i], seq_len)
        out[start:start + q_len] = attend(q[None, start:start + q_len], k[None], v[None], mask[None], scale)[0]
    return out


@register_backend("torch")
class TorchAttentionBackend(AttentionBackend):
    def forward(self, q, k, v, kv_cache, metadata, scale, rope=None):
        if rope is not None:
            q, k = rope.apply(q, k)
        write_kv_cache(k, v, kv_cache, metadata.slot_mapping)
        return paged_attention_reference(q, kv_cache, metadata, scale)
