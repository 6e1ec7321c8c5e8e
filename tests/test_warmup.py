"""The start-up warm-up that compiles every kernel variant before the first request
(pagedawq/engine/warmup.py, ModelRunner.warm_up) and the JIT compile counter it is checked with
(pagedawq/kernels/jit_compiles.py). On a GPU, test_gpu_engine.py checks that requests compile
nothing after it."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from pagedawq import LLM
from pagedawq.engine import warmup
from pagedawq.engine.warmup import (ALL_COUNTS_UP_TO, SEQUENCE_COUNTS, first_layers, prefill_token_counts,
                                    token_signature, warmup_batches)
from pagedawq.kernels import awq_gemm
from pagedawq.kernels.jit_compiles import JitCompiles, int_specialization
from pagedawq.quant.awq import AWQConfig
from tests.conftest import make_tiny_model


def test_int_specialization_is_tritons_rule():
    triton = pytest.importorskip("triton")
    try:   # Triton's own specializer (3.6-3.9); a Triton that moved it cannot be compared with
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.compiler import BaseBackend
    except ImportError as e:
        pytest.skip(f"Triton {triton.__version__} has no native_specialize_impl: {e}")
    for value in [*range(1, 70), 255, 256, 4095, 4096, 8191, 8192]:
        kind, attr = native_specialize_impl(BaseBackend, value, False, True, True)
        is_one, mult16 = int_specialization(value)
        assert is_one == (kind == "constexpr"), (triton.__version__, value)
        assert mult16 == (attr == "D" and not is_one), (triton.__version__, value)


def test_jit_compiles_records_the_compile_step_and_restores_it(monkeypatch):
    from triton import knobs
    from triton.runtime.jit import JITFunction
    calls = []
    monkeypatch.setattr(JITFunction, "_do_compile",
                        lambda fn, key, *a, **kw: calls.append((fn.__name__, key)) or "kernel")
    kern_a, kern_b = types.SimpleNamespace(__name__="kern_a"), types.SimpleNamespace(__name__="kern_b")
    with JitCompiles() as outer:
        # no jit_cache_hook: with one set, Triton 3.6 fails every Gluon launch (layout constexprs)
        assert knobs.runtime.jit_cache_hook is None
        assert JITFunction._do_compile(kern_a, ("sig", 1)) == "kernel"
        with JitCompiles() as inner:
            JITFunction._do_compile(kern_b, ("sig", 2))
    JITFunction._do_compile(kern_a, ("sig", 3))   # restored: not recorded
    assert outer.kernels == ["kern_a", "kern_b"] and inner.kernels == ["kern_b"]
    assert outer.variants[0] == "kern_a ('sig', 1)"
    assert calls == [("kern_a", ("sig", 1)), ("kern_b", ("sig", 2)), ("kern_a", ("sig", 3))]


def test_jit_compiles_closed_out_of_order_leave_tritons_step_as_it_was(monkeypatch):
    """An engine keeps one open for its lifetime, so they close in any order."""
    from triton.runtime.jit import JITFunction
    original = lambda fn, key, *a, **kw: "kernel"   # noqa: E731
    monkeypatch.setattr(JITFunction, "_do_compile", original)
    kern = types.SimpleNamespace(__name__="kern")
    first, second = JitCompiles(), JitCompiles()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    JITFunction._do_compile(kern, ("sig", 1))
    assert first.kernels == [] and second.kernels == ["kern"]
    second.__exit__(None, None, None)
    assert JITFunction._do_compile is original


def test_jit_compiles_leave_a_wrapper_other_code_put_on_top_of_ours(monkeypatch):
    """Code that wraps Triton's compile step while a JitCompiles is open keeps its wrapper when the
    last one closes (ours stays beneath it, passing compiles through and recording nothing), and a
    JitCompiles opened later records each compile once."""
    from triton.runtime.jit import JITFunction
    original = lambda fn, key, *a, **kw: "kernel"   # noqa: E731
    monkeypatch.setattr(JITFunction, "_do_compile", original)
    theirs = []
    kern = types.SimpleNamespace(__name__="kern")
    with JitCompiles() as first:
        ours = JITFunction._do_compile

        def their_wrapper(fn, key, *a, **kw):
            theirs.append(key)
            return ours(fn, key, *a, **kw)
        JITFunction._do_compile = their_wrapper
    assert JITFunction._do_compile is their_wrapper
    assert JITFunction._do_compile(kern, ("sig", 1)) == "kernel" and first.kernels == []
    with JitCompiles() as second:
        JITFunction._do_compile(kern, ("sig", 2))
    assert second.kernels == ["kern"] and theirs == [("sig", 1), ("sig", 2)]
    assert JITFunction._do_compile is their_wrapper


def test_a_compile_after_start_up_warns_for_the_engines_kernels_only(monkeypatch, caplog):
    from triton.runtime.jit import JITFunction
    monkeypatch.setattr(JITFunction, "_do_compile", lambda fn, key, *a, **kw: "kernel")
    ours = types.SimpleNamespace(__name__="_prefill_kernel", module="pagedawq.kernels.paged_attention")
    theirs = types.SimpleNamespace(__name__="user_kernel", module="user_code")
    with caplog.at_level("WARNING", logger="pagedawq.engine.warmup"), \
            JitCompiles(on_compile=warmup.warn_late_compile) as watch:
        with warmup.starting_up():   # another engine's start-up: due, not late
            JITFunction._do_compile(ours, ("sig", 1))
        JITFunction._do_compile(theirs, ("sig", 2))
        assert caplog.records == []
        JITFunction._do_compile(ours, ("sig", 3))
    assert len(watch.kernels) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "kernel variant compiled in a request, after the start-up warm-up (a request waited for it; the warm-up "
        "misses its launch signature): _prefill_kernel ('sig', 3)"]


class _Layer(nn.Module):
    """A stand-in linear layer with a method that reports ``sig(m)`` as its launch signature."""

    def __init__(self, sig, width: int = 8) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width, width))
        self.linear_method = types.SimpleNamespace(launch_signature=lambda layer, m, device: sig(m))


def test_counts_take_every_small_count_then_one_count_a_signature():
    model = nn.Sequential(_Layer(lambda m: m > 100), _Layer(lambda m: m >= 300, width=4))
    counts = prefill_token_counts(model, 1000, torch.device("cpu"))
    # above ALL_COUNTS_UP_TO: Triton's classes (not a multiple of 16, a multiple) in each of the
    # three ranges the two layers' signatures make
    assert counts == [*range(1, ALL_COUNTS_UP_TO + 1), 33, 48, 101, 112, 300, 304]


def test_counts_of_layers_that_compile_nothing_per_count():
    model = nn.Sequential(*[_Layer(lambda m: None) for _ in range(3)])
    assert prefill_token_counts(model, 20, torch.device("cpu")) == list(range(1, 21))
    assert prefill_token_counts(model, 5000, torch.device("cpu"))[ALL_COUNTS_UP_TO:] == [33, 48]


class _AWQShape(nn.Module):
    """An AWQ layer of a real shape (meta tensors) held in the "wgmma_t" layout."""

    def __init__(self, k: int, n: int, group: int, silu: bool) -> None:
        super().__init__()
        self.qweight = nn.Parameter(torch.empty(k, n // 8, dtype=torch.int32, device="meta"), requires_grad=False)
        self.scales = nn.Parameter(torch.empty(k // group, n, dtype=torch.float16, device="meta"),
                                   requires_grad=False)
        self.wgmma_t_weights = None if silu else ()
        self.wgmma_t_silu_weights = () if silu else None
        self.linear_method = AWQConfig(4, group, True).get_linear_method("x")


def test_counts_of_the_13b_awq_layers_on_an_h100_cover_every_config(monkeypatch):
    """Llama-2-13B's four layer shapes as a Hopper GPU of 132 SMs sees them (no GPU needed: the
    configs are pure functions of the shape)."""
    pytest.importorskip("triton.experimental.gluon")
    monkeypatch.setattr(awq_gemm, "interpreting", lambda: False)
    monkeypatch.setattr(awq_gemm, "_sm_count", lambda device: 132)
    monkeypatch.setattr(awq_gemm, "_fast_memory", lambda device: False)
    pdl = lambda device, m: m <= 16   # noqa: E731 - PDL on, as on Hopper
    monkeypatch.setattr(awq_gemm, "use_pdl", pdl)
    monkeypatch.setattr(warmup, "use_pdl", pdl)
    model = nn.Sequential(_AWQShape(5120, 15360, 128, False), _AWQShape(5120, 5120, 128, False),
                          _AWQShape(5120, 27648, 128, True), _AWQShape(13824, 5120, 128, False))
    device = torch.device("cuda")
    counts = prefill_token_counts(model, 8192, device)
    assert 40 < len(counts) < 150, len(counts)
    layers = list(model)
    signatures = {token_signature(layers, c, device) for c in counts[ALL_COUNTS_UP_TO:]}
    assert len(signatures) == len(counts) - ALL_COUNTS_UP_TO   # one count a signature
    for m in [33, 100, 129, 255, 256, 257, 1000, 1024, 3000, 4097, 8191, 8192]:
        assert token_signature(layers, m, device) in signatures, m
    # the wgmma_t configs change between 256 and 257 tokens (the warp-specialised tiles) and the
    # weight-stream hint between one token tile and two
    assert token_signature(layers, 256, device) != token_signature(layers, 257, device)


def test_batches_split_counts_longer_than_the_context_then_cover_the_attention_kernels():
    batches = list(warmup_batches([1, 40, 100, 250], 96, 16))
    assert [(b.lens, b.table_blocks) for b in batches[:4]] == [
        ((1,), 1), ((40,), 3), ((96, 4), 6), ((96, 96, 58), 6)]
    attention = batches[4:]
    for b in attention:
        assert b.table_blocks * 16 >= max(b.lens)
    # every number of sequences with each last query length, at a block-table width of each of
    # Triton's int classes (1 where one block holds the sequences, a multiple of 16, other)
    seen = {(len(b.lens), b.lens[-1], int_specialization(b.table_blocks)) for b in attention}
    for seqs in SEQUENCE_COUNTS:
        assert all(b.lens[:-1] == (1,) * (seqs - 1) for b in attention if len(b.lens) == seqs)
        for last in (1, 2):
            assert {(seqs, last, c) for c in [(True, False), (False, True), (False, False)]} <= seen
        assert {(seqs, 64, c) for c in [(False, True), (False, False)]} <= seen


def test_first_layers_runs_a_prefix_and_restores_the_model_even_on_error():
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(5))
    original = model.model.layers
    with first_layers(model, 2) as truncated:
        assert truncated and len(model.model.layers) == 2
        assert model.model.layers[1] is original[1]
    assert model.model.layers is original
    with pytest.raises(RuntimeError), first_layers(model, 2):
        raise RuntimeError
    assert model.model.layers is original
    with first_layers(nn.Linear(2, 2), 2) as truncated:
        assert not truncated


def test_runner_warm_up_runs_every_batch_through_the_first_two_layers(tmp_path, monkeypatch):
    path = make_tiny_model(tmp_path / "m", "llama", num_hidden_layers=3)
    with LLM(str(path), device="cpu", dtype="float32", skip_tokenizer_init=True, max_model_len=64,
             max_num_batched_tokens=100, kv_cache_memory_bytes=2**20) as llm:
        runner = llm.llm_engine.executor.worker.runner
        seen = []
        forward = runner._dummy_forward
        monkeypatch.setattr(runner, "_dummy_forward", lambda lens, num_logits, table_blocks: seen.append(
            (lens, num_logits, table_blocks, len(runner.model.model.layers))) or forward(lens, num_logits, table_blocks))
        runner.warm_up()
        expected = list(warmup_batches(prefill_token_counts(runner.model, 100, runner.device), 64, 16))
        assert [(tuple(lens), blocks) for lens, _, blocks, _ in seen] == [(b.lens, b.table_blocks) for b in expected]
        assert all(n == len(lens) and layers == 2 for lens, n, _, layers in seen)
        assert len(runner.model.model.layers) == 3


def test_runner_warm_up_with_enforce_eager_runs_one_short_chunk(tmp_path, monkeypatch):
    """enforce_eager asks for a quick start (as in vLLM): the variants compile in the requests."""
    path = make_tiny_model(tmp_path / "m", "llama")
    with LLM(str(path), device="cpu", dtype="float32", skip_tokenizer_init=True, max_model_len=64,
             kv_cache_memory_bytes=2**20, enforce_eager=True) as llm:
        runner = llm.llm_engine.executor.worker.runner
        seen = []
        monkeypatch.setattr(runner, "_dummy_forward",
                            lambda lens, num_logits, table_blocks: seen.append((lens, num_logits, table_blocks)))
        runner.warm_up()
        assert seen == [([2], 1, 1)]
