"""Calibration data: reading files and lists, blocking the token stream, self-generated text."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

import pagedawq
from pagedawq.models.default_model import ensure_default_model_dir
from pagedawq.quant.calibrate.data import calibration_blocks, read_calibration_texts, token_stream
from pagedawq.quant.calibrate.errors import CalibrationDataError
from pagedawq.quant.calibrate.self_text import OPENINGS, generate_calibration_texts


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ensure_default_model_dir())


def test_txt_drops_bom_and_jsonl_reads_text(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffhello\nworld\n".encode("utf-8"))
    assert read_calibration_texts(tmp_path / "a.txt") == ["hello\nworld\n"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two", "id": 2}) + "\n")
    assert read_calibration_texts(str(tmp_path / "b.jsonl")) == ["one", "two"]


@pytest.mark.parametrize("content, match", [('{"txt": "x"}\n', 'no string field "text"'),
                                            ("{not json\n", "not valid JSON")])
def test_bad_jsonl_names_the_line(tmp_path, content, match):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n' + content)
    with pytest.raises(CalibrationDataError, match=f"c.jsonl:2 .*{match}"):
        read_calibration_texts(tmp_path / "c.jsonl")


def test_other_sources_are_refused(tmp_path):
    (tmp_path / "d.csv").write_text("x")
    with pytest.raises(CalibrationDataError, match=".txt or .jsonl"):
        read_calibration_texts(tmp_path / "d.csv")
    with pytest.raises(CalibrationDataError, match="non-empty list of strings"):
        read_calibration_texts([])


def test_token_stream_joins_documents_with_a_blank_line(tokenizer):
    ids = token_stream(["first line\nsecond", "third"], tokenizer)
    assert tokenizer.decode(ids) == "first line\nsecond\n\nthird"


def test_blocks_are_evenly_spread_and_non_overlapping(tokenizer):
    words = [f"w{i}" for i in range(4000)]
    texts = [" ".join(words)]
    stream = torch.tensor(token_stream(texts, tokenizer))
    blocks = calibration_blocks(texts, tokenizer, n_samples=4, seq_len=100)
    assert blocks.shape == (4, 100) and blocks.dtype == torch.int64
    n_blocks = stream.numel() // 100
    starts = [0, round((n_blocks - 1) / 3), round(2 * (n_blocks - 1) / 3), n_blocks - 1]
    for block, start in zip(blocks, starts):
        assert torch.equal(block, stream[start * 100:(start + 1) * 100])


class FakeLLM:
    """Stands in for ``pagedawq.LLM``: a request returns ``max_tokens`` tokens, or 5 if its seed is a multiple of 4."""

    calls: list = []

    def __init__(self, model, dtype, device):
        self.model = model

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        FakeLLM.closed = True

    def generate(self, prompts, params):
        FakeLLM.calls.append((list(prompts), [p.seed for p in params]))
        assert all(p.temperature == 1.0 and p.max_tokens == 64 and not p.ignore_eos for p in params)
        outputs = []
        for prompt, p in zip(prompts, params):
            n = 5 if p.seed % 4 == 0 else p.max_tokens
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(text=f" {prompt}|seed{p.seed}|" * n,
                                                                    token_ids=list(range(n)))]))
        return outputs


def test_self_generation_samples_distinct_documents_until_enough_tokens(monkeypatch):
    FakeLLM.calls, FakeLLM.closed = [], False
    monkeypatch.setattr(pagedawq, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(pagedawq, "SamplingParams", lambda **kw: SimpleNamespace(**kw), raising=False)
    texts = generate_calibration_texts("model-dir", n_tokens=20 * 64, seq_len=64)
    # Round 1 asks for 20 documents, 5 of which stop after 5 tokens (985 tokens); round 2 asks for
    # ceil(295 / 64) = 5 more (+202), round 3 for 2 (+128), which is enough.
    assert [len(prompts) for prompts, _ in FakeLLM.calls] == [20, 5, 2]
    seeds = [s for _, call_seeds in FakeLLM.calls for s in call_seeds]
    assert seeds == list(range(len(seeds))) and len(texts) == len(seeds)
    assert texts[0].startswith(OPENINGS[0]) and texts[len(OPENINGS)].startswith(OPENINGS[0])
    assert len(set(texts)) == len(texts)
    assert sum(5 if s % 4 == 0 else 64 for s in seeds) >= 20 * 64
    assert FakeLLM.closed
