"""Host side of the prefill CUDA graphs (``pagedawq.engine.cuda_graphs.PrefillGraphs``): which steps
they take and what a replay sees in its static buffers. The graphs themselves are captured and
checked against eager steps on the GPU (test_gpu_engine.py); the kernels' handling of the padding
is checked in test_attention_kernels.py."""
from __future__ import annotations

import pytest
import torch

from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.engine.cuda_graphs import PREFILL_GRAPH_TOKENS, PrefillGraphs


def _metadata(query_lens: list[int], ctx: int = 0) -> AttentionMetadata:
    qsl = [0]
    for n in query_lens:
        qsl.append(qsl[-1] + n)
    seq_lens = [ctx + n for n in query_lens]
    return AttentionMetadata(
        slot_mapping=torch.arange(100, 100 + qsl[-1], dtype=torch.int64),
        query_start_loc=torch.tensor(qsl, dtype=torch.int32), seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.arange(1, 1 + 3 * len(query_lens), dtype=torch.int32).view(len(query_lens), 3),
        max_query_len=max(query_lens), max_seq_len=max(seq_lens), query_lens_cpu=query_lens, seq_lens_cpu=seq_lens)


class _Replay:
    """Stands in for a captured graph: a replay snapshots the static buffers it would read."""

    def __init__(self, graphs: PrefillGraphs, tokens: int) -> None:
        self.graphs, self.tokens, self.seen = graphs, tokens, None

    def replay(self) -> None:
        g, t = self.graphs, self.tokens
        self.seen = {name: getattr(g, name)[:t].clone() for name in ("input_ids", "positions", "slot_mapping")}
        self.seen.update(query_start_loc=g.query_start_loc.clone(), seq_lens=g.seq_lens.clone(),
                         block_tables=g.block_tables.clone())


def _graphs(max_tokens: int = 8192) -> PrefillGraphs:
    graphs = PrefillGraphs(torch.nn.Identity(), torch.device("cpu"), max_model_len=256, block_size=16,
                           max_tokens=max_tokens)
    for t in graphs.sizes:
        graphs.graphs[t] = (_Replay(graphs, t), torch.arange(t * 4, dtype=torch.float32).view(t, 4))
    return graphs


def test_one_short_prefill_takes_a_graph_and_nothing_else_does():
    graphs = _graphs()
    assert graphs.sizes == list(PREFILL_GRAPH_TOKENS) == [16, 32, 64]
    assert graphs.can_run(_metadata([2])) and graphs.can_run(_metadata([64], ctx=100))
    assert not graphs.can_run(_metadata([1]))          # a decode step
    assert not graphs.can_run(_metadata([65]))         # too long
    assert not graphs.can_run(_metadata([5, 7]))       # two sequences
    assert not _graphs(max_tokens=8).can_run(_metadata([5]))   # steps never that long: nothing captured


def test_a_replay_sees_the_prefill_padded_to_the_next_size():
    graphs = _graphs()
    graphs.slot_mapping.fill_(55)   # a previous replay's slots, to be overwritten or padded
    md = _metadata([20], ctx=40)
    ids, positions = torch.arange(7, 27), torch.arange(40, 60)
    out = graphs.run(ids, positions, md)
    replay = graphs.graphs[32][0]
    assert replay.seen is not None and graphs.graphs[16][0].seen is None and graphs.graphs[64][0].seen is None
    assert torch.equal(out, torch.arange(32 * 4, dtype=torch.float32).view(32, 4)[:20])
    assert torch.equal(replay.seen["input_ids"][:20], ids) and torch.equal(replay.seen["positions"][:20], positions)
    assert torch.equal(replay.seen["slot_mapping"][:20], md.slot_mapping)
    assert replay.seen["slot_mapping"][20:].eq(-1).all()        # padded tokens write nothing
    assert replay.seen["query_start_loc"].tolist() == [0, 20]   # and the attention skips them
    assert replay.seen["seq_lens"].tolist() == [60]
    assert replay.seen["block_tables"][0, :3].tolist() == [1, 2, 3]


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
