"""The engine's GPU path (Triton attention, fused ops, AWQ kernels, CUDA graphs) against
transformers and against the torch path on the same weights. Skipped without CUDA."""
from __future__ import annotations

import gc

import pytest
import torch
import triton.language as tl

from pagedawq import LLM, SamplingParams
from tests.conftest import hf_greedy, make_rtn_awq_checkpoint, make_tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)  # head_dim 64
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=1)


def prompts(seed=0, lengths=(3, 40, 150, 17)):
    gen = torch.Generator().manual_seed(seed)
    return [{"prompt_token_ids": torch.randint(3, 512, (n,), generator=gen).tolist()} for n in lengths]


def run(path, **kw):
    kw.setdefault("dtype", "float32")
    with LLM(str(path), device="cuda", skip_tokenizer_init=True, gpu_memory_utilization=0.3, **kw) as llm:
        return llm.generate(prompts(), GREEDY, use_tqdm=False)


def toks(outs):
    return [o.outputs[0].token_ids for o in outs]


@torch.inference_mode()
def assert_greedy_consistent_with(hf, outs, tol: float) -> None:
    """Teacher-force our tokens through the reference: each of our tokens must be the reference's
    argmax up to ``tol`` nats, and our logprob must be within ``tol`` of the reference's."""
    for p, out in zip(prompts(), outs):
        ids = p["prompt_token_ids"] + out.outputs[0].token_ids
        logits = hf(torch.tensor([ids], device="cuda")).logits[0].float().log_softmax(-1)
        n = len(p["prompt_token_ids"])
        for step, tok in enumerate(out.outputs[0].token_ids):
            ref = logits[n - 1 + step]
            assert ref.max() - ref[tok] <= tol, (step, float(ref.max() - ref[tok]))
            assert abs(out.outputs[0].logprobs[step][tok].logprob - ref[tok].item()) <= tol


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu")
    return {arch: make_tiny_model(base / arch, arch, **SHAPE) for arch in ("llama", "qwen2", "mistral", "llama3_rope")}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "llama3_rope"])
def test_fp32_gpu_engine_matches_transformers(models, arch):
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(models[arch], dtype=torch.float32).cuda().eval()
    outs = run(models[arch])
    for p, out in zip(prompts(), outs):
        assert out.outputs[0].token_ids == hf_greedy(hf, p["prompt_token_ids"], 24)
    assert_greedy_consistent_with(hf, outs, 2e-3)


def test_triton_path_equals_torch_path_and_graphs_equal_eager(models):
    path = models["llama"]
    reference = toks(run(path, attention_backend="torch", enforce_eager=True))
    assert toks(run(path, attention_backend="triton", enforce_eager=True)) == reference
    assert toks(run(path, attention_backend="triton")) == reference          # CUDA graphs for decode
    assert toks(run(path, max_num_batched_tokens=32)) == reference           # chunked prefill on GPU
    assert toks(run(path, enable_prefix_caching=True)) == reference
    assert toks(run(path, async_scheduling=False)) == reference              # the default on CUDA is async
    assert toks(run(path, async_scheduling=True, max_num_batched_tokens=32)) == reference


def test_prefill_graphs_equal_eager_prefills(models):
    """One prompt at a time, so that each prefill is one sequence of 3-65 new tokens: the CUDA
    graphs of 16, 32 and 64 tokens (padded) take 3-64, eager steps 65, and a prefix-cache hit
    replays the rest of a prompt after its cached blocks."""
    path = models["llama"]
    ps = prompts(seed=3, lengths=(3, 16, 17, 40, 64, 65))

    def generate(batch: list, **kw) -> list:
        with LLM(str(path), device="cuda", dtype="float32", skip_tokenizer_init=True, gpu_memory_utilization=0.3,
                 **kw) as llm:
            runner = llm.llm_engine.executor.worker.runner
            assert (runner.prefill_graphs is not None) == ("enforce_eager" not in kw)
            return [llm.generate(p, GREEDY, use_tqdm=False)[0] for p in batch]

    eager = generate(ps, enforce_eager=True)
    graphed = generate(ps)
    assert toks(graphed) == toks(eager)
    for g, e in zip(graphed, eager):
        for lg, le in zip(g.outputs[0].logprobs, e.outputs[0].logprobs):
            assert all(abs(lg[t].logprob - le[t].logprob) < 1e-4 for t in le)
    # the 40-token prompt twice with prefix caching: the second prefill starts after 32 cached tokens
    assert toks(generate([ps[3], ps[3]], enable_prefix_caching=True)) == [toks(eager)[3]] * 2


def test_decode_graphs_of_every_context_bucket_equal_eager(tmp_path):
    """Batches of 2 have decode graphs for contexts up to 128 tokens (2 KV splits), 256 (4) and
    max_model_len = 1024 (8). A 110-token prompt crosses 128 tokens mid-generation and a 240-token
    one crosses 256, so their batches move from graph to graph: tokens and logprobs as eager steps
    give."""
    path = make_tiny_model(tmp_path / "llama", "llama", **SHAPE, max_position_embeddings=1024)
    batches = [prompts(seed=5, lengths=(3, 110)), prompts(seed=6, lengths=(5, 240))]

    def generate(**kw) -> list:
        with LLM(str(path), device="cuda", dtype="float32", skip_tokenizer_init=True, max_model_len=1024,
                 gpu_memory_utilization=0.3, **kw) as llm:
            graphs = llm.llm_engine.executor.worker.runner.graphs
            assert graphs is None or graphs.contexts[2] == (128, 256, 1024)
            return [out for batch in batches for out in llm.generate(batch, GREEDY, use_tqdm=False)]

    eager, graphed = generate(enforce_eager=True), generate()
    assert toks(graphed) == toks(eager)
    for g, e in zip(graphed, eager):
        for lg, le in zip(g.outputs[0].logprobs, e.outputs[0].logprobs):
            assert all(abs(lg[t].logprob - le[t].logprob) < 1e-4 for t in le)


def test_decode_graph_timing_replays_the_captured_graph(models):
    with LLM(str(models["llama"]), device="cuda", skip_tokenizer_init=True, gpu_memory_utilization=0.3,
             dtype="float32", max_num_seqs=4) as llm:
        llm.generate(prompts(), GREEDY, use_tqdm=False)
        (r,) = llm.llm_engine.time_decode_graph(4, replays=5)
        assert r["rank"] == 0 and r["gpu_us"] > 0 and r["host_us"] > 0
        with pytest.raises(ValueError, match=r"no decode graph of batch 3 on this rank \(captured: \[1, 2, 4\]\)"):
            llm.llm_engine.time_decode_graph(3)


@pytest.mark.parametrize("dtype, tol", [("float16", 0.05), ("bfloat16", 0.3)])
def test_half_precision_tracks_transformers(models, dtype, tol):
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(models["qwen2"], dtype=getattr(torch, dtype)).cuda().eval()
    assert_greedy_consistent_with(hf, run(models["qwen2"], dtype=dtype), tol)


def test_awq_gpu_kernels_track_dequantized_reference(tmp_path, models):
    import transformers
    awq_dir, deq = make_rtn_awq_checkpoint(models["llama"], tmp_path / "awq", 64)
    hf = transformers.AutoModelForCausalLM.from_pretrained(models["llama"], dtype=torch.float32).eval()
    state = {k: (deq[k] if k in deq else v.half().float()) for k, v in hf.state_dict().items()}
    hf.load_state_dict(state)
    hf = hf.cuda()
    # fp16 activations through 2 layers against the fp32 reference: 0.052 seen once (H100, the wgmma_t
    # path), about what fp16 rounding gives (the bf16 test allows 0.3, 2^3 times fp16's unit roundoff)
    assert_greedy_consistent_with(hf, run(awq_dir, dtype="float16", quantization="awq"), 0.06)


def test_awq_weights_are_held_once_on_hopper(tmp_path, models):
    """On Hopper every AWQ layer of an fp16 model keeps its weights only in the wgmma_t layout: its
    checkpoint tensors are freed (meta tensors keep the shapes), so the weights take their packed
    size once (kept beside the copy they doubled it, and a 70B did not fit one 80 GB GPU)."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the repacked layout is Hopper's")
    awq_dir, _ = make_rtn_awq_checkpoint(models["llama"], tmp_path / "awq", 64)
    with LLM(str(awq_dir), device="cuda", dtype="float16", quantization="awq", skip_tokenizer_init=True,
             gpu_memory_utilization=0.3) as llm:
        layers = [m for m in llm.llm_engine.executor.worker.runner.model.modules() if hasattr(m, "wgmma_t_weights")]
        assert len(layers) == 2 * 4   # qkv, o, gate_up, down of each of the tiny model's layers
        for m in layers:
            assert m.qweight.is_meta and m.qzeros.is_meta and m.scales.is_meta
            assert (m.wgmma_t_weights is None) != (m.wgmma_t_silu_weights is None)
        outs = llm.generate(prompts(), GREEDY, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [24] * len(outs)


def test_awq_weights_held_once_still_serve_where_the_wgmma_t_kernel_does_not_build(tmp_path, models, monkeypatch):
    """Where the Gluon kernel fails to build (session 37: a Triton jit_cache_hook broke it), every
    call rebuilds the layer's checkpoint tensors from the repacked copy, inside the CUDA graph
    captures too (no host reads there), bit for bit: the tokens equal those of the same paths on
    weights never repacked."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the repacked layout is Hopper's")
    from pagedawq.kernels import awq_gemm
    awq_dir, _ = make_rtn_awq_checkpoint(models["llama"], tmp_path / "awq", 64)
    with monkeypatch.context() as env:
        env.setenv("PAGEDAWQ_DISABLE_WGMMA_T", "1")
        never_repacked = run(awq_dir, dtype="float16", quantization="awq")
    monkeypatch.setattr(awq_gemm, "_BUILD_ERROR", ["RuntimeError: a build failure for the test"])
    with LLM(str(awq_dir), device="cuda", dtype="float16", quantization="awq", skip_tokenizer_init=True,
             gpu_memory_utilization=0.3) as llm:
        runner = llm.llm_engine.executor.worker.runner
        assert runner.graphs is not None and all(m.qweight.is_meta for m in runner.model.modules()
                                                 if hasattr(m, "wgmma_t_weights"))
        outs = llm.generate(prompts(), GREEDY, use_tqdm=False)
    assert toks(outs) == toks(never_repacked)


def _probe_kernel_source(out_ptr):
    """A kernel no engine launches: every JITFunction made from it compiles on its first launch."""
    tl.store(out_ptr, 7)


def _fresh_engine_kernel():
    """A new JITFunction (empty in-memory cache) that reports itself as one of pagedawq's kernels."""
    import triton
    _probe_kernel_source.__module__ = "pagedawq.kernels.test_probe"
    return triton.jit(_probe_kernel_source)


def test_a_kernel_compiled_after_start_up_is_reported_until_the_engine_closes(models, caplog):
    """The engine watches for compiles from the end of its start-up: one there means the warm-up
    missed a launch signature and a request waited for it (engine/warmup.warn_late_compile)."""
    out = torch.zeros(1, dtype=torch.int32, device="cuda")
    with caplog.at_level("WARNING", logger="pagedawq.engine.warmup"):
        with LLM(str(models["llama"]), device="cuda", dtype="float16", skip_tokenizer_init=True,
                 gpu_memory_utilization=0.3):
            assert not caplog.records   # the start-up's own compiles are not reported
            _fresh_engine_kernel()[(1,)](out)
            # the variant's key is a tuple on Triton 3.9 and a list on 3.6
            assert len(caplog.records) == 1 and "): _probe_kernel_source " in caplog.records[0].getMessage()
        _fresh_engine_kernel()[(1,)](out)   # closed: no longer watched
    assert len(caplog.records) == 1 and int(out) == 7


def test_weights_that_do_not_fit_the_gpu_are_refused_before_loading(tmp_path):
    """A Llama-2-70B in fp16 (138 GB) on one GPU: a clear error with the sizes and the fixes, from
    the meta-device count, instead of an out-of-memory error from inside a layer's constructor."""
    import json

    from pagedawq.errors import InsufficientMemoryError
    (tmp_path / "config.json").write_text(json.dumps(dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=8192, intermediate_size=28672,
        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
        max_position_embeddings=4096, rms_norm_eps=1e-5, torch_dtype="float16")))
    gc.collect()   # earlier tests' garbage (a failed test's frames hold its tensors) is not this test's
    allocated = torch.cuda.memory_allocated()
    with pytest.raises(InsufficientMemoryError, match=r"weights take 128\.\d GiB in torch.float16.*quantization='awq'"):
        LLM(str(tmp_path), device="cuda", load_format="dummy", skip_tokenizer_init=True)
    assert torch.cuda.memory_allocated() == allocated


@pytest.mark.parametrize("quantization", ["awq", None])
def test_requests_compile_no_kernel_after_start_up(tmp_path, models, quantization):
    """The start-up warm-up (engine/warmup.py) compiles every kernel variant a batch can launch: a
    workload of prompts of every length, chunked prefills beside decodes, prefix-cache hits and
    decode batches of many sizes then compiles nothing (before it, each new prefill size compiled
    its GEMM configs inside a request)."""
    from pagedawq.kernels.jit_compiles import JitCompiles
    path = make_rtn_awq_checkpoint(models["llama"], tmp_path / "awq", 64)[0] if quantization else models["llama"]
    with LLM(str(path), device="cuda", dtype="float16", quantization=quantization, skip_tokenizer_init=True,
             gpu_memory_utilization=0.3, max_model_len=256, max_num_batched_tokens=1024, max_num_seqs=64) as llm:
        gen = torch.Generator().manual_seed(0)
        lengths = torch.randint(1, 250, (120,), generator=gen).tolist()
        batch = [{"prompt_token_ids": torch.randint(3, 512, (n,), generator=gen).tolist()} for n in lengths]
        batch += batch[:10]   # prefix-cache hits
        params = [SamplingParams(temperature=0.8 if i % 2 else 0, max_tokens=1 + i % 6, seed=i, ignore_eos=True)
                  for i in range(len(batch))]
        with JitCompiles() as compiled:
            outs = llm.generate(batch, params, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [p.max_tokens for p in params]
    assert compiled.kernels == [], "\n".join(compiled.variants)
