"""Triton KV-cache write and paged attention vs. the torch reference backend.

Without CUDA the kernels run in Triton's CPU interpreter on small shapes (float32 and float16:
the interpreter's bfloat16 ``tl.dot`` returns garbage in triton 3.9, so bfloat16 is covered by
the GPU tests only). The GPU tests repeat the checks at model-sized shapes and check that the
decode path replays correctly from a CUDA graph.

Every case draws fresh random data, poisons outputs and unused cache slots with NaN (so an
unwritten output or a read past a sequence's context shows up as NaN), shuffles physical blocks,
and pads block tables with the index of a NaN-filled block.
"""
from __future__ import annotations

import math

import pytest
import torch

from pagedawq.attention.backend import Rope, get_backend
from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.attention.torch_backend import paged_attention_reference
from pagedawq.attention.torch_backend import write_kv_cache as reference_write_kv_cache
from tests.triton_interpreter import interpret_without_cuda

CUDA = interpret_without_cuda("pagedawq.kernels.fused_ops", "pagedawq.kernels.cache_ops",
                              "pagedawq.kernels.paged_attention", "pagedawq.attention.triton_backend")
DEVICE = "cuda" if CUDA else "cpu"

from pagedawq.attention import triton_backend  # noqa: E402
from pagedawq.kernels import cache_ops, fused_ops  # noqa: E402
from pagedawq.kernels import paged_attention as pa  # noqa: E402

gpu = pytest.mark.gpu
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    assert not out.isnan().any(), "output has NaN (unwritten element or a read of a poisoned slot)"
    return ((out - ref).norm() / ref.norm()).item()


class Batch:
    """A random paged batch: sequence ``i`` has ``ctx_lens[i]`` cached tokens and ``query_lens[i]`` new ones."""

    def __init__(self, query_lens: list[int], ctx_lens: list[int], block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, gen: torch.Generator):
        seq_lens = [q + c for q, c in zip(query_lens, ctx_lens)]
        blocks_needed = [-(-s // block_size) for s in seq_lens]
        num_blocks = sum(blocks_needed) + 3  # spare blocks stay NaN
        physical = torch.randperm(num_blocks, generator=gen).tolist()
        self.poison_block = physical.pop()
        block_tables = torch.full((len(seq_lens), max(blocks_needed) + 2), self.poison_block, dtype=torch.int32)
        for i, n in enumerate(blocks_needed):
            block_tables[i, :n] = torch.tensor(physical[:n], dtype=torch.int32)
            del physical[:n]
        self.kv_cache = torch.full((2, num_blocks, block_size, num_kv_heads, head_dim), float("nan"), dtype=dtype)

        def slots(i: int, positions: range) -> list[int]:
            return [int(block_tables[i, p // block_size]) * block_size + p % block_size for p in positions]

        # The cached prefixes are in the cache already; the new tokens' slots are for the backend to fill.
        prefix = [s for i, c in enumerate(ctx_lens) for s in slots(i, range(c))]
        if prefix:
            n = len(prefix)
            reference_write_kv_cache(torch.randn(n, num_kv_heads, head_dim, generator=gen),
                                     torch.randn(n, num_kv_heads, head_dim, generator=gen),
                                     self.kv_cache, torch.tensor(prefix))
        new = [s for i, (q, c) in enumerate(zip(query_lens, ctx_lens)) for s in slots(i, range(c, c + q))]
        starts = [0]
        for q in query_lens:
            starts.append(starts[-1] + q)
        self.kv_cache = self.kv_cache.to(DEVICE)
        self.metadata = AttentionMetadata(
            slot_mapping=torch.tensor(new, dtype=torch.int64, device=DEVICE),
            query_start_loc=torch.tensor(starts, dtype=torch.int32, device=DEVICE),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
            block_tables=block_tables.to(DEVICE),
            max_query_len=max(query_lens), max_seq_len=max(seq_lens),
            query_lens_cpu=list(query_lens), seq_lens_cpu=seq_lens)
        self.num_tokens = starts[-1]

    def fill_new_tokens(self) -> None:
        """Write random K/V for the new tokens with the reference (for tests of attention alone)."""
        n, shape = self.num_tokens, self.kv_cache.shape[3:]
        reference_write_kv_cache(torch.randn(n, *shape, device=DEVICE), torch.randn(n, *shape, device=DEVICE),
                                 self.kv_cache, self.metadata.slot_mapping)

    def reference(self, q: torch.Tensor, scale: float) -> torch.Tensor:
        return paged_attention_reference(q.double().cpu(), self.kv_cache.double().cpu(),
                                         _to_cpu(self.metadata), scale)


def _to_cpu(md: AttentionMetadata) -> AttentionMetadata:
    return AttentionMetadata(md.slot_mapping.cpu(), md.query_start_loc.cpu(), md.seq_lens.cpu(),
                             md.block_tables.cpu(), md.max_query_len, md.max_seq_len,
                             md.query_lens_cpu, md.seq_lens_cpu)


def _qkv(num_tokens: int, num_q_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
         gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strided q, k, v views of one fused QKV tensor, as the model produces them."""
    width = (num_q_heads + 2 * num_kv_heads) * head_dim
    qkv = torch.randn(num_tokens, width, generator=gen).to(dtype=dtype, device=DEVICE)
    q, k, v = qkv.split([num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=1)
    return (q.view(num_tokens, num_q_heads, head_dim), k.view(num_tokens, num_kv_heads, head_dim),
            v.view(num_tokens, num_kv_heads, head_dim))


def _cos_sin(head_dim: int, max_position: int = 512) -> torch.Tensor:
    from pagedawq.models.layers.rotary import RotaryEmbedding
    return RotaryEmbedding(head_dim, max_position, {"rope_theta": 10000.0}).cos_sin_cache


def _check_backend(query_lens, ctx_lens, block_size, num_q_heads, num_kv_heads, head_dim, dtype, seed,
                   rotary: bool = False):
    """Backend forward (Triton cache write + attention) vs. the torch backend in float64; with
    ``rotary``, both also rotate q and k first (the Triton one in its cache-write kernel)."""
    gen = torch.Generator().manual_seed(seed)
    batch = Batch(query_lens, ctx_lens, block_size, num_kv_heads, head_dim, dtype, gen)
    q, k, v = _qkv(batch.num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, gen)
    scale = 1.0 / math.sqrt(head_dim)
    ref_cache = batch.kv_cache.double().cpu()
    md_cpu = _to_cpu(batch.metadata)
    rope = ref_rope = None
    if rotary:
        positions = torch.randint(0, 512, (batch.num_tokens,), generator=gen)
        rope = Rope(positions.to(DEVICE), _cos_sin(head_dim).to(DEVICE))
        ref_rope = Rope(positions, _cos_sin(head_dim).double())
    ref = get_backend("torch", 4096).forward(q.double().cpu(), k.double().cpu(), v.double().cpu(), ref_cache, md_cpu, scale,
                                             ref_rope)
    out = get_backend("triton", 4096).forward(q, k, v, batch.kv_cache, batch.metadata, scale, rope)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, ref) < TOLERANCE[dtype]
    cache, expected = batch.kv_cache.cpu().double().nan_to_num(7.0), ref_cache.to(dtype).double().nan_to_num(7.0)
    if rotary:   # rotated in float64 there: within one rounding of the dtype
        assert torch.allclose(cache, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    else:        # the new tokens exactly as the reference wrote them (NaN elsewhere)
        assert torch.equal(cache, expected)


# --- KV cache write ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
def test_write_kv_cache_matches_reference_and_skips_padding(dtype, block_size):
    gen = torch.Generator().manual_seed(block_size)
    num_blocks, num_kv_heads, head_dim, num_tokens = 6, 3, 64, 40
    cache = torch.full((2, num_blocks, block_size, num_kv_heads, head_dim), float("nan"), dtype=dtype, device=DEVICE)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[torch.randperm(num_tokens, generator=gen)[:7]] = -1
    _, k, v = _qkv(num_tokens, 9, num_kv_heads, head_dim, torch.float32, gen)  # strided, cast on write
    expected = cache.clone().cpu()
    reference_write_kv_cache(k.cpu(), v.cpu(), expected, slots)
    cache_ops.write_kv_cache(k, v, cache, slots.to(DEVICE))
    assert torch.equal(cache.cpu().nan_to_num(7.0), expected.nan_to_num(7.0))
    assert cache.isnan().sum() == expected.isnan().sum() > 0  # padding tokens wrote nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rotary_write_kv_cache_equals_rotary_then_write(dtype):
    """The fused rotary + cache write: q, k and the cache bit-identical to the two kernels it
    replaces, on strided views of a fused QKV output, padding slots untouched."""
    gen = torch.Generator().manual_seed(11)
    num_blocks, block_size, num_q_heads, num_kv_heads, head_dim, num_tokens = 6, 16, 6, 2, 64, 40
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[torch.randperm(num_tokens, generator=gen)[:5]] = -1
    positions = torch.randint(0, 512, (num_tokens,), generator=gen).to(DEVICE)
    cos_sin = _cos_sin(head_dim).to(DEVICE)
    state = gen.get_state()
    runs = []
    for fused in (True, False):
        gen.set_state(state)
        q, k, v = _qkv(num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, gen)
        cache = torch.full((2, num_blocks, block_size, num_kv_heads, head_dim), float("nan"), dtype=dtype,
                           device=DEVICE)
        if fused:
            cache_ops.rotary_embedding_write_kv_cache(positions, q, k, v, cos_sin, cache, slots.to(DEVICE))
        else:
            fused_ops.rotary_embedding(positions, q, k, cos_sin, head_dim)
            cache_ops.write_kv_cache(k, v, cache, slots.to(DEVICE))
        runs.append((q.clone(), k.clone(), cache.nan_to_num(7.0)))
    for got, expected in zip(*runs):
        assert torch.equal(got, expected)
    assert runs[0][2].eq(7.0).all(dim=(-1, -2)).sum() == 2 * (num_blocks * block_size - num_tokens + 5)


# --- attention, CPU interpreter shapes ----------------------------------------------------------

MIXED = ([37, 20, 1, 1, 16, 3], [0, 45, 70, 5, 32, 0])  # fresh prefill, prefix hit, decodes, aligned chunk


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("num_q_heads,num_kv_heads", [(9, 3), (4, 4)])
def test_mixed_batch_backend_matches_reference(dtype, block_size, num_q_heads, num_kv_heads):
    _check_backend(*MIXED, block_size, num_q_heads, num_kv_heads, 64, dtype, seed=block_size + num_q_heads)


def test_prefill_head_dim_128_and_chunks_crossing_blocks():
    _check_backend([50, 9], [13, 100], 16, 2, 1, 128, torch.float32, seed=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backend_with_rotary_matches_reference(dtype):
    _check_backend(*MIXED, 16, 9, 3, 64, dtype, seed=21, rotary=True)


@pytest.mark.parametrize("num_kv_splits", [1, 3, 16, None])
@pytest.mark.parametrize("num_q_heads,num_kv_heads,block_size", [(9, 3, 16), (4, 4, 32)])
def test_decode_split_kv_matches_reference(num_kv_splits, num_q_heads, num_kv_heads, block_size):
    # 16 splits over 1..137 keys leaves many splits empty; the reduce must ignore them.
    gen = torch.Generator().manual_seed(num_q_heads * 100 + (num_kv_splits or 0))
    batch = Batch([1] * 5, [136, 40, 0, 63, 9], block_size, num_kv_heads, 64, torch.float32, gen)
    batch.fill_new_tokens()
    q = torch.randn(batch.num_tokens, num_q_heads, 64, generator=gen).to(DEVICE)
    out = torch.full_like(q, float("nan"))
    result = pa.paged_attention(q, batch.kv_cache, batch.metadata, 0.125, out=out, num_kv_splits=num_kv_splits)
    assert result is out
    assert rel_err(out, batch.reference(q, 0.125)) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("block_n", [32, 64])
def test_decode_key_tiles_the_gpu_picks_match_reference(block_n):
    """``decode_block_n``: 32 keys a tile for split contexts without GQA, else 64 (the default
    ``decode_attention`` takes on a GPU); both tiles over contexts that end mid-tile and empty
    splits, as on the GPU."""
    assert pa.decode_block_n(1, 4) == 32
    assert pa.decode_block_n(1, 1) == pa.decode_block_n(3, 4) == 64
    gen = torch.Generator().manual_seed(block_n)
    batch = Batch([1] * 4, [136, 40, 0, 63], 16, 4, 64, torch.float32, gen)
    batch.fill_new_tokens()
    q = torch.randn(batch.num_tokens, 4, 64, generator=gen).to(DEVICE)
    out = torch.full_like(q, float("nan"))
    pa.decode_attention(q, batch.kv_cache, batch.metadata, 0.125, out, num_kv_splits=4, block_n=block_n)
    assert rel_err(out, batch.reference(q, 0.125)) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("rotary", [False, True])
def test_prefill_padded_as_its_cuda_graph_pads_it_matches_the_unpadded_one(rotary):
    """``engine.cuda_graphs.PrefillGraphs`` replays a 5-token prefill (after a cached prefix) in a
    graph of 16 tokens: the 11 padded tokens carry slot -1, the query start stays at 5, and the
    kernels are sized for 16. The real tokens' attention and the cache must be as without padding."""
    gen = torch.Generator().manual_seed(8)
    batch = Batch([5], [20], 16, 3, 64, torch.float32, gen)
    q, k, v = _qkv(16, 9, 3, 64, torch.float32, gen)   # rows 5-15: the padded tokens' garbage
    scale = 0.125
    positions = torch.arange(20, 36).to(DEVICE)
    rope = Rope(positions, _cos_sin(64).to(DEVICE)) if rotary else None
    backend = get_backend("triton", 4096)
    cache = batch.kv_cache.clone()
    want = backend.forward(q[:5].clone(), k[:5].clone(), v[:5].clone(), cache, batch.metadata, scale,
                           Rope(positions[:5], rope.cos_sin_cache) if rotary else None)
    md = batch.metadata
    padded = AttentionMetadata(
        slot_mapping=torch.cat([md.slot_mapping, torch.full((11,), -1, dtype=torch.int64, device=DEVICE)]),
        query_start_loc=md.query_start_loc, seq_lens=md.seq_lens, block_tables=md.block_tables, max_query_len=16,
        max_seq_len=4096, query_lens_cpu=[16], seq_lens_cpu=[4096], graph_capture=True)
    got = backend.forward(q, k, v, batch.kv_cache, padded, scale, rope)
    assert torch.equal(got[:5], want)
    assert torch.equal(batch.kv_cache.nan_to_num(7.0), cache.nan_to_num(7.0))   # the padded tokens wrote nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("num_q_heads,num_kv_heads,num_kv_splits", [(9, 3, 1), (9, 3, 4), (4, 4, 16)])
def test_decode_with_rotary_inside_equals_rotary_write_then_decode(dtype, num_q_heads, num_kv_heads, num_kv_splits):
    """decode_attention(..., rotary=...): the kernel rotates q and the new keys and writes the new
    keys and values itself; the same cache bits as the separate rotary + cache-write kernel before
    the decode kernel, for any split count (the new token's split writes it), and a padding row
    (context 0, slot -1) writes and reads nothing; also where the new token starts its split
    (context 64 with 4 or 16 splits) and where it is the only key (context 0). The outputs have the
    same bits too, except for fp16 on a GPU: there Triton packs the tensor-core operands of q . k
    in another order when q comes from registers (sm_90 TTGIR: kWidth 4 against 2 when q is
    loaded), which adds the fp32 products in another order (H100, 2026-11-27: 2 of the 6 cases
    differed); they then agree to fp16 rounding."""
    gen = torch.Generator().manual_seed(num_q_heads + 10 * num_kv_splits)
    batch = Batch([1] * 6, [70, 0, 130, 15, 64, 0], 16, num_kv_heads, 64, dtype, gen)
    md = batch.metadata
    md.seq_lens[1] = 0                        # a padded row, as in a CUDA graph
    md.slot_mapping[1] = -1
    q, k, v = _qkv(6, num_q_heads, num_kv_heads, 64, dtype, gen)
    rope = Rope(md.seq_lens.long().clamp_min(1) - 1, _cos_sin(64).to(DEVICE))
    assert pa.rotary_fusable(q, k, v, batch.kv_cache)
    cache = batch.kv_cache.clone()
    q_ref, k_ref = q.clone(), k.clone()
    cache_ops.rotary_embedding_write_kv_cache(rope.positions, q_ref, k_ref, v, rope.cos_sin_cache, cache,
                                              md.slot_mapping)
    want = pa.decode_attention(q_ref, cache, md, 0.125, num_kv_splits=num_kv_splits)
    q_in = q.clone()
    got = pa.decode_attention(q, batch.kv_cache, md, 0.125, num_kv_splits=num_kv_splits,
                              rotary=pa.DecodeRotary(rope.positions, rope.cos_sin_cache, k, v))
    assert torch.equal(batch.kv_cache.nan_to_num(7.0), cache.nan_to_num(7.0))
    assert torch.equal(q, q_in)                # q is read, not rotated in place
    real = [0, 2, 3, 4, 5]
    if CUDA and dtype == torch.float16:
        assert rel_err(got[real], want[real]) < TOLERANCE[dtype]
    else:
        assert torch.equal(got[real], want[real])


def test_decode_with_rotary_refuses_what_it_cannot_fuse():
    q = torch.zeros(2, 4, 48)
    cache = torch.zeros(2, 3, 16, 2, 48)
    k = v = torch.zeros(2, 2, 48)
    assert not pa.rotary_fusable(q, k, v, cache)          # head size 48: not a power of two
    q, cache, k = torch.zeros(2, 4, 64), torch.zeros(2, 3, 16, 2, 64), torch.zeros(2, 64, 2).transpose(1, 2)
    assert not pa.rotary_fusable(q, k, k, cache)          # heads not packed
    with pytest.raises(ValueError, match="rotary_fusable"):
        pa.decode_attention(q, cache, None, 0.125, rotary=pa.DecodeRotary(torch.zeros(2), torch.zeros(8, 64), k, k))


def test_decode_refuses_a_batch_without_one_query_row_a_sequence():
    # Its kernels take query row i as sequence i's new token (no query_start_loc load).
    gen = torch.Generator().manual_seed(12)
    batch = Batch([1, 1], [5, 9], 16, 2, 64, torch.float32, gen)
    q = torch.zeros(3, 2, 64, device=DEVICE)
    with pytest.raises(ValueError, match="one new token a sequence: 3 query rows for 2 sequences"):
        pa.decode_attention(q, batch.kv_cache, batch.metadata, 0.125)


def test_prefill_kernel_also_serves_decode_batches():
    gen = torch.Generator().manual_seed(11)
    batch = Batch([1] * 3, [70, 1, 33], 16, 3, 64, torch.float16, gen)
    batch.fill_new_tokens()
    q = torch.randn(batch.num_tokens, 9, 64, generator=gen).to(torch.float16).to(DEVICE)
    out = pa.prefill_attention(q, batch.kv_cache, batch.metadata, 0.125)
    assert rel_err(out, batch.reference(q, 0.125)) < TOLERANCE[torch.float16]


@pytest.mark.parametrize("device,dtype", [
    ("cpu", torch.float32), ("cpu", torch.bfloat16),
    pytest.param("cuda", torch.float32, marks=[gpu, requires_cuda]),
    pytest.param("cuda", torch.float16, marks=[gpu, requires_cuda])])
def test_profile_forward_attention_runs_a_fused_sdpa_kernel_and_matches_float64(device, dtype):
    """The memory-profiling forward's attention (no KV cache yet, ``attention_without_cache``) must
    run one of SDPA's fused kernels: the math kernel holds the [heads, T, T] scores, which the real
    prefill never does, and the KV cache is made smaller by them (the 70B at TP=1 profiled a 10.4
    GiB peak). With only the fused kernels allowed (flash; on CUDA also memory-efficient, which
    takes fp32), a fallback to the math kernel raises here."""
    from types import SimpleNamespace

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pagedawq.models.layers.attention import attention_without_cache
    gen = torch.Generator().manual_seed(7)
    lens, heads, kv_heads, dim, scale = [5, 33], 6, 2, 16, 0.25
    q, k, v = (torch.randn(sum(lens), h, dim, generator=gen) for h in (heads, kv_heads, kv_heads))
    fused = [SDPBackend.FLASH_ATTENTION] + ([SDPBackend.EFFICIENT_ATTENTION] if device == "cuda" else [])
    with sdpa_kernel(fused):
        out = attention_without_cache(*(t.to(device, dtype) for t in (q, k, v)), SimpleNamespace(query_lens_cpu=lens),
                                      scale)
    ref, start = torch.empty(q.shape, dtype=torch.float64), 0
    for n in lens:
        qs, ks, vs = (t[start:start + n].double().transpose(0, 1) for t in (q, k, v))
        ks, vs = ks.repeat_interleave(heads // kv_heads, 0), vs.repeat_interleave(heads // kv_heads, 0)
        scores = (qs @ ks.transpose(1, 2) * scale).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
        ref[start:start + n] = (scores.softmax(-1) @ vs).transpose(0, 1)
        start += n
    assert out.dtype == dtype and rel_err(out, ref) < TOLERANCE[dtype]


def test_choose_num_kv_splits():
    # A large batch fills the GPU without splitting.
    assert pa.choose_num_kv_splits(64, 32, 2048, num_sms=132) == 1
    # One sequence: split, bounded by the minimum split length and the maximum count.
    assert pa.choose_num_kv_splits(1, 32, 2048, num_sms=132) == 16
    assert pa.choose_num_kv_splits(8, 32, 4096, num_sms=132) == 3
    assert pa.choose_num_kv_splits(1, 8, 8192, num_sms=132) == pa.MAX_KV_SPLITS
    assert pa.choose_num_kv_splits(1, 8, 200, num_sms=132) == 2
    assert pa.choose_num_kv_splits(4, 1, 0, num_sms=132) == 1


def test_decode_graphs_get_short_context_buckets_with_one_key_tile_a_split():
    """13B at TP=2 (20 heads, no GQA: 32-key tiles), batch 1: the max_model_len graph has 27
    splits, so any context up to 864 tokens gives each program at most one tile. A graph for
    contexts up to 128 tokens needs only 4 splits for that, up to 256 8, up to 512 16. Bounds whose
    count equals the next larger one's get no graph: TP=1 (40 heads) has 14 splits at 4096, which
    512 tokens fill too; a batch of 8 is at 4 splits already, and so is a short max_model_len
    (256 tokens: 2); GQA (group 4, 64-key tiles) needs half as many."""
    t = triton_backend.TritonAttentionBackend(4096)
    assert t.decode_graph_contexts(1, 20, 20) == (128, 256, 512, 4096)
    assert [t.graph_kv_splits(1, 20, 20, b) for b in (128, 256, 512, 4096)] == [4, 8, 16, 27]
    assert t.decode_graph_contexts(1, 40, 40) == (128, 256, 4096)
    assert [t.graph_kv_splits(1, 40, 40, b) for b in (128, 256, 512)] == [4, 8, 14]
    assert t.decode_graph_contexts(8, 20, 20) == (4096,)
    assert t.decode_graph_contexts(64, 32, 32) == (4096,)
    assert [t.graph_kv_splits(1, 32, 8, b) for b in (128, 256, 512, 4096)] == [2, 4, 8, 32]
    assert triton_backend.TritonAttentionBackend(256).decode_graph_contexts(1, 20, 20) == (256,)   # 2 splits
    assert triton_backend.TritonAttentionBackend(100).decode_graph_contexts(1, 20, 20) == (100,)
    assert get_backend("torch", 4096).decode_graph_contexts(1, 20, 20) == (4096,)


# --- GPU, model-sized shapes --------------------------------------------------------------------

@gpu
@requires_cuda
@pytest.mark.parametrize("dtype,block_size,num_q_heads,num_kv_heads,head_dim", [
    (torch.float16, 16, 9, 3, 64), (torch.bfloat16, 32, 9, 3, 64),
    (torch.float16, 32, 32, 32, 128), (torch.bfloat16, 16, 32, 8, 128)])
def test_gpu_mixed_batch(dtype, block_size, num_q_heads, num_kv_heads, head_dim):
    _check_backend([700, 300, 1, 1, 1, 256, 33], [0, 900, 1500, 17, 2047, 512, 0], block_size,
                   num_q_heads, num_kv_heads, head_dim, dtype, seed=block_size + head_dim)


@gpu
@requires_cuda
@pytest.mark.parametrize("dtype,num_kv_splits,num_q_heads,num_kv_heads,head_dim,block_size", [
    (torch.float16, None, 9, 3, 64, 16), (torch.bfloat16, 7, 9, 3, 64, 32), (torch.float32, 1, 9, 3, 64, 16),
    (torch.float16, 1, 32, 32, 128, 16), (torch.bfloat16, None, 32, 32, 128, 32),
    (torch.float16, 7, 32, 8, 128, 32), (torch.float32, None, 32, 8, 128, 16)])
def test_gpu_decode(dtype, num_kv_splits, num_q_heads, num_kv_heads, head_dim, block_size):
    gen = torch.Generator().manual_seed(head_dim + block_size)
    batch = Batch([1] * 6, [3000, 1, 64, 777, 15, 1200], block_size, num_kv_heads, head_dim, dtype, gen)
    batch.fill_new_tokens()
    q = torch.randn(batch.num_tokens, num_q_heads, head_dim, generator=gen).to(dtype=dtype, device=DEVICE)
    out = torch.full_like(q, float("nan"))
    pa.paged_attention(q, batch.kv_cache, batch.metadata, head_dim ** -0.5, out=out, num_kv_splits=num_kv_splits)
    assert rel_err(out, batch.reference(q, head_dim ** -0.5)) < TOLERANCE[dtype]


@gpu
@requires_cuda
@pytest.mark.parametrize("num_kv_splits", [2, 4, 8])
@pytest.mark.parametrize("dtype,num_q_heads,num_kv_heads,head_dim", [
    (torch.float16, 40, 40, 128), (torch.bfloat16, 32, 8, 128), (torch.float32, 9, 3, 64)])
def test_gpu_decode_splits_merged_in_clusters(num_kv_splits, dtype, num_q_heads, num_kv_heads, head_dim):
    """On Hopper, 4 splits merge in a thread-block cluster (no reduce kernel; 2 and 8 keep it): the
    outputs match the float64 reference for contexts that leave splits empty, end mid-tile or hold
    one key, eagerly and replayed from a CUDA graph after the contexts grow; a padded row (context
    0) gets zeros, as from the reduce kernel."""
    q_device = torch.device(DEVICE)
    assert pa.decode_clusters(q_device, num_kv_splits) == (
        torch.cuda.get_device_capability()[0] >= 9 and num_kv_splits == 4)
    gen = torch.Generator().manual_seed(num_kv_splits + head_dim)
    batch = Batch([1] * 6, [3000, 0, 64, 777, 15, 40], 16, num_kv_heads, head_dim, dtype, gen)
    batch.fill_new_tokens()
    q = torch.randn(batch.num_tokens, num_q_heads, head_dim, generator=gen).to(dtype=dtype, device=q_device)
    out = torch.full_like(q, float("nan"))
    pa.decode_attention(q, batch.kv_cache, batch.metadata, head_dim ** -0.5, out, num_kv_splits=num_kv_splits)
    assert rel_err(out, batch.reference(q, head_dim ** -0.5)) < TOLERANCE[dtype]

    md = batch.metadata
    full = md.seq_lens.clone()
    md.seq_lens.sub_(1)   # capture one token short, then replay at the full lengths
    md.seq_lens[1] = 0    # and the second row padded, as a graph pads a batch
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        pa.decode_attention(q, batch.kv_cache, md, head_dim ** -0.5, out, num_kv_splits=num_kv_splits)
    out.fill_(float("nan"))
    graph.replay()
    assert torch.equal(out[1].float().cpu(), torch.zeros(num_q_heads, head_dim))
    md.seq_lens.copy_(full)
    graph.replay()
    assert rel_err(out, batch.reference(q, head_dim ** -0.5)) < TOLERANCE[dtype]


@gpu
@requires_cuda
def test_gpu_decode_replays_from_cuda_graph_with_fixed_splits():
    """A captured decode step stays correct when the contexts grow between replays."""
    gen = torch.Generator().manual_seed(5)
    batch = Batch([1] * 4, [100, 1000, 5, 2000], 16, 3, 64, torch.float16, gen)
    batch.fill_new_tokens()
    md = batch.metadata
    md.graph_capture = True
    backend = triton_backend.TritonAttentionBackend(max_model_len=4096)
    q = torch.randn(4, 9, 64, generator=gen).half().to(DEVICE)
    k = torch.randn(4, 3, 64, generator=gen).half().to(DEVICE)
    v = torch.randn(4, 3, 64, generator=gen).half().to(DEVICE)
    backend.forward(q, k, v, batch.kv_cache, md, 0.125)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = backend.forward(q, k, v, batch.kv_cache, md, 0.125)
    # Shorten every context by one token in place (the tokens stay cached), then replay.
    for step, shrink in enumerate((0, 1)):
        md.seq_lens.sub_(shrink)
        md.seq_lens_cpu = [s - shrink for s in md.seq_lens_cpu]
        md.max_seq_len -= shrink
        pos = md.seq_lens.long() - 1
        md.slot_mapping.copy_(md.block_tables.gather(1, (pos // 16)[:, None]).squeeze(1).long() * 16 + pos % 16)
        q.copy_(torch.randn(q.shape, generator=gen).half())
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(out, batch.reference(q, 0.125)) < TOLERANCE[torch.float16], f"replay {step}"
