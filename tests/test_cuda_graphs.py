"""Host side of the CUDA graphs (``pagedawq.engine.cuda_graphs``): which steps they take, what a
replay sees in its static buffers, and the one-copy staging into them (``InputArena``). The graphs
themselves are captured and checked against eager steps on the GPU (test_gpu_engine.py); the
kernels' handling of the padding is checked in test_attention_kernels.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pagedawq.engine.cuda_graphs import PREFILL_GRAPH_TOKENS, DecodeGraphs, PrefillGraphs
from pagedawq.engine.host_staging import FIELD_ALIGN, HostStaging, InputArena, StepArrays
from pagedawq.engine.model_runner import _as_slice


def _step(query_lens: list[int], ctx: int = 0, blocks: int = 3) -> StepArrays:
    tokens = sum(query_lens)
    return StepArrays(input_ids=np.arange(7, 7 + tokens, dtype=np.int64),
                      positions=np.concatenate([np.arange(ctx, ctx + n) for n in query_lens]).astype(np.int64),
                      slot_mapping=np.arange(100, 100 + tokens, dtype=np.int64), query_lens=query_lens,
                      seq_lens=[ctx + n for n in query_lens],
                      block_table=np.arange(1, 1 + blocks * len(query_lens), dtype=np.int32).reshape(-1, blocks))


class _Replay:
    """Stands in for a captured graph: a replay snapshots the static buffers it would read."""

    def __init__(self, graphs: PrefillGraphs | DecodeGraphs, size: int, per_token: tuple[str, ...],
                 whole: tuple[str, ...]) -> None:
        self.graphs, self.size, self.per_token, self.whole, self.seen = graphs, size, per_token, whole, None

    def replay(self) -> None:
        g = self.graphs
        self.seen = {name: getattr(g, name)[:self.size].clone() for name in self.per_token}
        self.seen.update({name: getattr(g, name).clone() for name in self.whole})


def _fake_captures(graphs, per_token: tuple[str, ...], whole: tuple[str, ...], keys=None):
    for key in keys or graphs.sizes:
        t = key[0] if isinstance(key, tuple) else key
        graphs.graphs[key] = (_Replay(graphs, t, per_token, whole),
                              torch.arange(t * 4, dtype=torch.float32).view(t, 4))
    return graphs


def _graphs(max_tokens: int = 8192) -> PrefillGraphs:
    graphs = PrefillGraphs(torch.nn.Identity(), torch.device("cpu"), max_model_len=256, block_size=16,
                           max_tokens=max_tokens)
    return _fake_captures(graphs, ("input_ids", "positions", "slot_mapping"),
                          ("query_start_loc", "seq_lens", "block_tables"))


def _decode_graphs(max_num_seqs: int = 16, graph_contexts=None) -> DecodeGraphs:
    graphs = DecodeGraphs(torch.nn.Identity(), torch.device("cpu"), max_num_seqs=max_num_seqs, max_model_len=256,
                          block_size=16, graph_contexts=graph_contexts)
    keys = [(bs, c) for bs, bounds in graphs.contexts.items() for c in bounds]
    return _fake_captures(graphs, ("input_ids", "positions", "slot_mapping", "seq_lens", "block_tables"), (), keys)


def test_one_short_prefill_takes_a_graph_and_nothing_else_does():
    graphs = _graphs()
    assert graphs.sizes == list(PREFILL_GRAPH_TOKENS) == [16, 32, 64]
    assert graphs.can_run(_step([2])) and graphs.can_run(_step([64], ctx=100))
    assert not graphs.can_run(_step([1]))          # a decode step
    assert not graphs.can_run(_step([65]))         # too long
    assert not graphs.can_run(_step([5, 7]))       # two sequences
    assert not _graphs(max_tokens=8).can_run(_step([5]))   # steps never that long: nothing captured


def test_a_replay_sees_the_prefill_padded_to_the_next_size():
    graphs = _graphs()
    graphs.slot_mapping.fill_(55)   # a previous replay's slots, to be overwritten or padded
    graphs.block_tables.fill_(9)    # and its block table
    step = _step([20], ctx=40)
    out = graphs.replay(graphs.stage(step))
    replay = graphs.graphs[32][0]
    assert replay.seen is not None and graphs.graphs[16][0].seen is None and graphs.graphs[64][0].seen is None
    assert torch.equal(out, torch.arange(32 * 4, dtype=torch.float32).view(32, 4)[:20])
    assert replay.seen["input_ids"][:20].tolist() == step.input_ids.tolist()
    assert replay.seen["positions"][:20].tolist() == list(range(40, 60))
    assert replay.seen["slot_mapping"][:20].tolist() == step.slot_mapping.tolist()
    assert replay.seen["slot_mapping"][20:].eq(-1).all()        # padded tokens write nothing
    assert replay.seen["query_start_loc"].tolist() == [0, 20]   # and the attention skips them
    assert replay.seen["seq_lens"].tolist() == [60]
    assert replay.seen["block_tables"][0].tolist() == [1, 2, 3] + [0] * (graphs.max_blocks - 3)


def test_decode_steps_take_the_graph_of_the_next_batch_size():
    graphs = _decode_graphs()
    assert graphs.sizes == [1, 2, 4, 8, 16]
    assert graphs.can_run(_step([1] * 16, ctx=9)) and graphs.can_run(_step([1], ctx=0))
    assert not graphs.can_run(_step([1] * 17, ctx=9))   # larger than the largest graph
    assert not graphs.can_run(_step([1, 2], ctx=9))     # a prefill chunk in the batch


def test_a_decode_replay_sees_the_batch_padded_with_rows_that_do_nothing():
    graphs = _decode_graphs()
    _ = graphs.replay(graphs.stage(_step([1] * 8, ctx=30, blocks=5)))   # a bigger step before: stale rows
    step = _step([1] * 3, ctx=20, blocks=2)
    out = graphs.replay(graphs.stage(step))
    seen = graphs.graphs[4, 256][0].seen
    assert torch.equal(out, torch.arange(16, dtype=torch.float32).view(4, 4)[:3])
    assert seen["input_ids"][:3].tolist() == [7, 8, 9] and seen["positions"][:3].tolist() == [20] * 3
    assert seen["slot_mapping"].tolist() == [100, 101, 102, -1]   # the padding row writes nothing
    assert seen["seq_lens"].tolist() == [21, 21, 21, 0]           # and attends to nothing
    assert seen["block_tables"][:3, :2].tolist() == [[1, 2], [3, 4], [5, 6]]
    assert seen["block_tables"][:, 2:].eq(0).all() and seen["block_tables"][3].eq(0).all()


def test_a_decode_step_replays_the_graph_of_the_smallest_context_bound_that_holds_it():
    """Batch sizes up to 2 have a graph for contexts up to 64 tokens besides the one for up to
    max_model_len (256); the longest sequence of a step picks the bucket."""
    graphs = _decode_graphs(graph_contexts=lambda bs: (64, 256) if bs <= 2 else (256,))
    assert sorted(graphs.graphs) == [(1, 64), (1, 256), (2, 64), (2, 256), (4, 256), (8, 256), (16, 256)]
    for lens, key in (([63], (1, 64)), ([63, 10], (2, 64)), ([64, 10], (2, 64)), ([65, 10], (2, 256)), ([3, 30, 5], (4, 256))):
        step = _step([1] * len(lens), blocks=5)
        step.seq_lens = lens
        graphs.replay(graphs.stage(step))
        assert graphs.graphs[key][0].seen["seq_lens"][:len(lens)].tolist() == lens
        assert all(g.seen is None for k, (g, _) in graphs.graphs.items() if k != key)
        for g, _ in graphs.graphs.values():
            g.seen = None


@pytest.mark.parametrize("bounds", [(256, 64), (64,), (64, 64, 256)])
def test_decode_graph_contexts_must_ascend_to_max_model_len(bounds):
    with pytest.raises(ValueError, match="must ascend to max_model_len=256"):
        _decode_graphs(graph_contexts=lambda bs: bounds)


def test_the_arena_lays_fields_out_aligned_and_sends_the_last_only_up_to_its_rows():
    arena = InputArena([("a", torch.int64, (3,)), ("b", torch.int32, (5,)), ("table", torch.int32, (4, 6))],
                       torch.device("cpu"))
    starts = [v.data_ptr() - arena.buffer.data_ptr() for v in arena.views.values()]
    assert starts == [0, FIELD_ALIGN, 2 * FIELD_ALIGN]
    assert arena.views["table"].shape == (4, 6) and arena.views["b"].dtype == torch.int32
    arena.views["table"].fill_(-7)   # an earlier step's table
    pack = arena.pack(last_rows=2)
    assert pack["table"].shape == (2, 6) and pack.host.numel() == 2 * FIELD_ALIGN + 2 * 6 * 4
    pack["a"][:] = [1, -2, 3]
    pack["b"][4] = 2 ** 31 - 1
    pack["table"][1, 5] = 11
    arena.upload(pack)
    assert arena.views["a"].tolist() == [1, -2, 3] and arena.views["b"].tolist() == [0, 0, 0, 0, 2 ** 31 - 1]
    assert arena.views["table"][:2].tolist() == [[0] * 6, [0] * 5 + [11]]
    assert arena.views["table"][2:].eq(-7).all()   # rows past the pack's are not sent


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_an_eager_upload_starts_every_part_on_16_bytes(dtype):
    """Triton specialises pointers on 16-byte alignment: views of one transfer at other offsets
    compiled attention variants per batch size that the warm-up never launched."""
    parts = [np.arange(n) + 100 * n for n in (3, 5, 1)] + [np.arange(14).reshape(2, 7)]
    views = HostStaging(torch.device("cpu")).upload(parts, dtype)
    base = views[0].data_ptr()
    for p, v in zip(parts, views):
        assert v.dtype == dtype and v.shape == p.shape and v.tolist() == p.tolist()
        assert (v.data_ptr() - base) % 16 == 0


@pytest.mark.parametrize("indices,expected", [
    ([], slice(0, 0)), ([4], slice(4, 5)), ([0, 1, 2], slice(0, 3)), ([2, 3, 5], None), ([1, 0], None)])
def test_consecutive_indices_become_a_slice(indices, expected):
    assert _as_slice(indices) == expected


def test_the_switch_turns_them_off(monkeypatch):
    assert PrefillGraphs.enabled()
    monkeypatch.setenv("PAGEDAWQ_DISABLE_PREFILL_GRAPHS", "1")
    assert not PrefillGraphs.enabled()


@pytest.mark.parametrize("max_tokens,sizes", [(16, [16]), (40, [16, 32])])
def test_sizes_stop_at_the_longest_step(max_tokens, sizes):
    assert _graphs(max_tokens).sizes == sizes


def test_no_size_past_the_first_that_holds_the_longest_prompt():
    graphs = PrefillGraphs(torch.nn.Identity(), torch.device("cpu"), max_model_len=20, block_size=16, max_tokens=512)
    assert graphs.sizes == [16, 32]
