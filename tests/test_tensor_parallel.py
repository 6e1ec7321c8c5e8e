"""Tensor parallelism (Ray + gloo on CPU) gives the same greedy tokens as one device, for dense and
AWQ weights; every parallel layer type matches its unsharded twin; bad set-ups fail clearly."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.multiprocessing as mp

from pagedawq import LLM, SamplingParams
from pagedawq.config import ConfigError
from pagedawq.errors import UnsupportedModelError
from tests.conftest import make_rtn_awq_checkpoint, make_tiny_model

pytest.importorskip("ray")

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def run(path, tp: int, prompts, **kw) -> list[list[int]]:
    with LLM(str(path), device="cpu", dtype="float32", tensor_parallel_size=tp,
             kv_cache_memory_bytes=64 * 2**20, **kw) as llm:
        return [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY, use_tqdm=False)]


@pytest.fixture(scope="module")
def gqa_model_awq_g64(gqa_model, tmp_path_factory):
    """The GQA model as an RTN AWQ g64 checkpoint: at TP=2 each rank's o_proj holds one group."""
    return make_rtn_awq_checkpoint(gqa_model[0], tmp_path_factory.mktemp("tp_g64"), 64)[0]


@pytest.mark.parametrize("kind", ["fp32", "awq_g32", "awq_g64", "awq_per_channel"])
def test_tp2_random_gqa_model_matches_tp1(gqa_model, gqa_model_awq_g64, kind, tmp_path):
    """Per-channel AWQ (group -1): the row-parallel layers split their input, and every rank keeps
    the one row of scales and zeros."""
    path = {"fp32": gqa_model[0], "awq_g32": gqa_model[1], "awq_g64": gqa_model_awq_g64}.get(kind)
    if kind == "awq_per_channel":
        path = make_rtn_awq_checkpoint(gqa_model[0], tmp_path, -1)[0]
    prompts = [{"prompt_token_ids": list(range(7, 7 + n))} for n in (2, 17, 45)]
    single = run(path, 1, prompts, skip_tokenizer_init=True)
    assert run(path, 2, prompts, skip_tokenizer_init=True) == single


def test_tp2_async_scheduling_matches_tp1(gqa_model):
    """Opt-in asynchronous scheduling across Ray workers: rank 0 broadcasts each step's sampled
    tokens on the device, every rank fills the next step's pending inputs from them."""
    prompts = [{"prompt_token_ids": list(range(7, 7 + n))} for n in (2, 17, 45, 30)]
    mixed = [GREEDY, SamplingParams(temperature=0.9, seed=3, max_tokens=12, ignore_eos=True),
             SamplingParams(temperature=0, max_tokens=5, ignore_eos=True),
             SamplingParams(temperature=0, max_tokens=12, repetition_penalty=1.5, ignore_eos=True)]
    with LLM(str(gqa_model[0]), device="cpu", dtype="float32", skip_tokenizer_init=True,
             kv_cache_memory_bytes=64 * 2**20) as llm:
        single = [o.outputs[0].token_ids for o in llm.generate(prompts, mixed, use_tqdm=False)]
    with LLM(str(gqa_model[0]), device="cpu", dtype="float32", skip_tokenizer_init=True, tensor_parallel_size=2,
             kv_cache_memory_bytes=64 * 2**20, async_scheduling=True) as llm:
        assert llm.llm_engine.async_scheduling
        assert [o.outputs[0].token_ids for o in llm.generate(prompts, mixed, use_tqdm=False)] == single


@pytest.mark.parametrize("kind", ["fp32", "awq"])
def test_tp4_replicates_kv_heads(gqa_model, kind):
    """Four ranks over two KV heads: each rank keeps a copy of its KV head; with AWQ g32 the
    row-parallel o_proj gets one quantization group a rank (128 / 4 inputs)."""
    path = gqa_model[0] if kind == "fp32" else gqa_model[1]
    prompts = [{"prompt_token_ids": list(range(3, 30))}, {"prompt_token_ids": list(range(40, 45))}]
    single = run(path, 1, prompts, skip_tokenizer_init=True)
    assert run(path, 4, prompts, skip_tokenizer_init=True) == single


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fp32", "awq"])
def test_default_model_tp3_matches_tp1(default_model_dir, tmp_path_factory, kind):
    path = default_model_dir
    if kind == "awq":
        path, _ = make_rtn_awq_checkpoint(default_model_dir, tmp_path_factory.mktemp("smol_awq"), 64)
    prompts = ["The capital of France is", "def add(a, b):", "Once upon a time"]
    single = run(path, 1, prompts, max_model_len=512)
    assert run(path, 3, prompts, max_model_len=512) == single


def test_tp_set_up_errors(default_model_dir, tiny_llama_dir, monkeypatch):
    with pytest.raises(UnsupportedModelError, match="does not divide the model's 9 attention heads"):
        LLM(str(default_model_dir), device="cpu", tensor_parallel_size=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="needs 2 GPUs but 1 are visible"):
        LLM(str(tiny_llama_dir), device="cuda", tensor_parallel_size=2, skip_tokenizer_init=True)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match="(?s)pip install 'pagedawq\\[ray\\]'.*distributed_executor_backend='mp'"):
        LLM(str(tiny_llama_dir), device="cpu", tensor_parallel_size=2, skip_tokenizer_init=True,
            kv_cache_memory_bytes=8 * 2**20)
    with pytest.raises(ConfigError, match="must be 'uni', 'ray' or 'mp'"):
        LLM(str(tiny_llama_dir), device="cpu", tensor_parallel_size=2, distributed_executor_backend="threads")
    with pytest.raises(ConfigError, match="needs distributed_executor_backend='ray' or 'mp'"):
        LLM(str(tiny_llama_dir), device="cpu", tensor_parallel_size=2, distributed_executor_backend="uni",
            skip_tokenizer_init=True, kv_cache_memory_bytes=8 * 2**20)


def test_splits_a_layer_cannot_take_fail_before_any_rank_starts(gqa_model_awq_g64, tmp_path, monkeypatch):
    """Refused while the engine config is built, naming the layer: no worker is started (ray is
    made unimportable, which would fail any start)."""
    from pagedawq.quant.awq import AWQConfig, AWQConfigError
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AWQConfigError, match=r"group_size 64 does not divide model\.layers\.0\.self_attn\.o_proj's "
                                             r"input features per rank \(32 of 128\)"):
        LLM(str(gqa_model_awq_g64), device="cpu", tensor_parallel_size=4, skip_tokenizer_init=True)
    odd_mlp = make_tiny_model(tmp_path / "odd", "llama", intermediate_size=90)
    with pytest.raises(UnsupportedModelError, match=r"tensor_parallel_size=4 does not divide "
                                                    r"model\.layers\.0\.mlp\.down_proj's 90 input features"):
        LLM(str(odd_mlp), device="cpu", tensor_parallel_size=4, skip_tokenizer_init=True)
    # a layer left unquantized (modules_to_not_convert) takes any split
    AWQConfig(4, 64, True, ["o_proj"]).check_input_split("model.layers.0.self_attn.o_proj", 128, 32)
    with pytest.raises(AWQConfigError, match="o_proj"):
        AWQConfig(4, 64, True, ["lm_head"]).check_input_split("model.layers.0.self_attn.o_proj", 128, 32)


# ---- layer-level sharding, two gloo processes -------------------------------------------------------

def _layer_cases():
    from pagedawq.quant.awq import AWQConfig
    from pagedawq.quant.pack import pack_awq_gemm, quantize_weight

    gen = torch.Generator().manual_seed(0)
    K, N = 128, 64

    def dense(n, k):
        return {"weight": torch.randn(n, k, generator=gen)}

    def awq(n, k):
        w = torch.randn(n, k, generator=gen)
        qw, qz, s = pack_awq_gemm(*quantize_weight(w, 4, 32))
        return {"qweight": qw, "qzeros": qz, "scales": s.float()}

    cases = []
    for quant, make in ((None, dense), (AWQConfig(4, 32, True), awq)):
        cases.append(("column", quant, {None: make(N, K)}))
        cases.append(("merged", quant, {0: make(N, K), 1: make(N, K)}))
        cases.append(("qkv", quant, {"q": make(64, K), "k": make(32, K), "v": make(32, K)}))
        cases.append(("row", quant, {None: make(N, K)}))
    return cases


def _build(kind, quant):
    from pagedawq.models.layers.linear import (ColumnParallelLinear, MergedColumnParallelLinear,
                                               QKVParallelLinear, RowParallelLinear)
    kw = dict(bias=False, params_dtype=torch.float32, quant_config=quant)
    if kind == "column":
        return ColumnParallelLinear(128, [64], **kw)
    if kind == "merged":
        return MergedColumnParallelLinear(128, [64, 64], **kw)
    if kind == "qkv":
        return QKVParallelLinear(128, 16, 4, 2, **kw)
    return RowParallelLinear(128, 64, **kw)


def _load(layer, shards):
    params = dict(layer.named_parameters())
    for shard_id, tensors in shards.items():
        for name, t in tensors.items():
            p = params[name]
            p.weight_loader(p, t, shard_id) if shard_id is not None else p.weight_loader(p, t)
    layer.linear_method.process_weights_after_loading(layer)


def _partial_row_then_norm(x: torch.Tensor, world: int, rank: int, norm_case: tuple) -> list:
    """A row-parallel layer that leaves its all-reduce to the RMSNorm after it (as in a Llama
    block) against the unsharded layer followed by the add + norm."""
    from pagedawq.models.layers.linear import RowParallelLinear
    from pagedawq.models.layers.norm import RMSNorm
    shards, residual, weight, ref_out, ref_res = norm_case
    layer = RowParallelLinear(128, 64, bias=False, params_dtype=torch.float32, reduce_results=False)
    _load(layer, shards)
    norm = RMSNorm(64, 1e-6, torch.float32)
    norm.weight.data.copy_(weight)
    out, res = norm(layer(x.chunk(world, dim=-1)[rank]), residual, all_reduce_x=True)
    return [("row+norm out", False, float((out - ref_out).abs().max())),
            ("row+norm residual", False, float((res - ref_res).abs().max()))]


def _shard_worker(rank: int, world: int, port: int, x: torch.Tensor, expected: list, norm_case: tuple,
                  queue) -> None:
    from pagedawq.distributed.parallel_state import all_gather, init_tensor_parallel
    from pagedawq.models.layers.embedding import ParallelLMHead, VocabParallelEmbedding
    init_tensor_parallel(rank, world, f"tcp://127.0.0.1:{port}", "gloo")
    errors = _partial_row_then_norm(x, world, rank, norm_case)
    for (kind, quant, shards), ref in zip(_layer_cases(), expected):
        layer = _build(kind, quant)
        _load(layer, shards)
        inp = x.chunk(world, dim=-1)[rank] if kind == "row" else x
        out = layer(inp)
        if kind != "row":
            out = all_gather(out.contiguous(), dim=-1)
            # Gathered column shards interleave sub-layers per rank; reorder to the full layout.
            sizes = layer.output_partition_sizes
            parts = [p.split(sizes, dim=-1) for p in out.chunk(world, dim=-1)]
            out = torch.cat([parts[r][i] for i in range(len(sizes)) for r in range(world)], dim=-1)
        errors.append((kind, quant is not None, float((out - ref).abs().max())))
    table = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    emb, head = VocabParallelEmbedding(50, 16, torch.float32), ParallelLMHead(50, 16, torch.float32)
    emb.weight_loader(emb.weight, table)
    head.weight_loader(head.weight, table)
    ids = torch.tensor([0, 17, 25, 49])
    errors.append(("embedding", False, float((emb(ids) - table[ids]).abs().max())))
    # greedy tokens without gathering the logits: 51 tokens, so the last slice has a padding row
    # (logit 0) that must not win over the real, negative logits; the best token in two slices
    # (3 and 30): the first wins
    negative = -torch.rand(51, 16, generator=torch.Generator().manual_seed(3)) - 0.1
    negative[3] = negative[30] = -0.01
    greedy_head = ParallelLMHead(51, 16, torch.float32)
    greedy_head.weight_loader(greedy_head.weight, negative)
    hidden = torch.stack([torch.ones(16), torch.rand(16, generator=torch.Generator().manual_seed(4)) + 0.1])
    got = greedy_head.greedy_tokens(hidden)
    errors.append(("greedy tokens", False, float((got != torch.tensor([3, int((hidden[1] @ negative.t()).argmax())]))
                                                 .sum())))
    errors.append(("lm_head", False, float((head.compute_logits(x[:, :16]) - x[:, :16] @ table.t()).abs().max())))
    queue.put((rank, errors))


@pytest.mark.parametrize("world", [2])
def test_every_parallel_layer_matches_unsharded(world):
    from pagedawq.kernels import ops
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 128, generator=gen)
    expected = []
    for kind, quant, shards in _layer_cases():
        layer = _build(kind, quant)
        _load(layer, shards)
        expected.append(layer(x))
    row_shards = next(shards for kind, quant, shards in _layer_cases() if kind == "row" and quant is None)
    residual, weight = torch.randn(5, 64, generator=gen), 1 + torch.rand(64, generator=gen)
    row = _build("row", None)
    _load(row, row_shards)
    norm_case = (row_shards, residual, weight, *ops.fused_add_rms_norm(row(x), residual, weight, 1e-6))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    from pagedawq.engine.executor.channel_executor import free_port
    port = free_port()
    procs = [ctx.Process(target=_shard_worker, args=(r, world, port, x, expected, norm_case, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    for rank, errors in results:
        assert len(errors) == 13
        for kind, quantized, err in errors:
            assert err < 1e-4, (rank, kind, quantized, err)


def test_dead_worker_surfaces_as_error_not_hang(gqa_model):
    import ray

    from pagedawq.errors import EngineDeadError
    with LLM(str(gqa_model[0]), device="cpu", dtype="float32", tensor_parallel_size=2, skip_tokenizer_init=True,
             kv_cache_memory_bytes=8 * 2**20) as llm:
        ray.kill(llm.llm_engine.executor.workers[1])
        with pytest.raises(EngineDeadError, match="worker died"):
            llm.generate([{"prompt_token_ids": [5, 6, 7]}], GREEDY, use_tqdm=False)
        assert not llm.llm_engine.has_unfinished_requests()


def test_shutdown_survives_ray_errors_while_the_process_ends(gqa_model, monkeypatch, caplog):
    """A SIGTERM'd driver runs the shutdown from a finalizer while Ray's connection is closing, and
    Ray then fails the calls that free the workers (RpcError CANCELLED): logged, not raised."""
    import ray
    real_kill, killed = ray.kill, []

    def kill_then_fail(actor, **kw):
        real_kill(actor, **kw)
        killed.append(actor)
        raise ray.exceptions.RpcError("RPC error: CANCELLED")
    llm = LLM(str(gqa_model[0]), device="cpu", dtype="float32", tensor_parallel_size=2, skip_tokenizer_init=True,
              kv_cache_memory_bytes=8 * 2**20)
    executor = llm.llm_engine.executor
    workers = list(executor.workers)
    monkeypatch.setattr(ray, "kill", kill_then_fail)
    with caplog.at_level("WARNING", logger="pagedawq.engine.executor.ray"):
        llm.close()
    assert "incomplete" in caplog.text and "CANCELLED" in caplog.text
    assert executor.workers == [] and executor.placement_group is None
    assert killed == workers   # one failure does not leave the other workers running


def test_profile_reports_every_rank_and_graph_timing_needs_graphs(gqa_model, tmp_path):
    with LLM(str(gqa_model[0]), device="cpu", dtype="float32", tensor_parallel_size=2, skip_tokenizer_init=True,
             kv_cache_memory_bytes=8 * 2**20) as llm:
        llm.start_profile()
        llm.generate([{"prompt_token_ids": [5, 6, 7]}], GREEDY, use_tqdm=False)
        summaries = llm.stop_profile(str(tmp_path))
        with pytest.raises(Exception, match="no decode graph of batch 1 on this rank"):   # CPU: no CUDA graphs
            llm.llm_engine.time_decode_graph(1)
    assert [s["rank"] for s in summaries] == [0, 1]
    for s in summaries:
        assert "aten::" in s["table"]   # the ops the rank ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.json", "rank1.json"]


def test_deferred_all_reduce_rules_and_dispatch(monkeypatch):
    """A row-parallel layer with a bias must reduce itself; a norm reduces only with a residual;
    the fused kernel is used exactly when the fast all-reduce accepts the tensor."""
    from pagedawq.distributed import parallel_state
    from pagedawq.models.layers.linear import RowParallelLinear
    from pagedawq.models.layers.norm import RMSNorm
    with pytest.raises(ValueError, match="bias needs reduce_results=True"):
        RowParallelLinear(8, 8, bias=True, params_dtype=torch.float32, reduce_results=False)
    with pytest.raises(ValueError, match="needs a residual"):
        RMSNorm(8, 1e-6, torch.float32)(torch.ones(2, 8), all_reduce_x=True)

    calls = []

    class FakeFastAllReduce:
        def __init__(self, fuse: bool) -> None:
            self.fuse = fuse

        def can_fuse_add_rms_norm(self, x):
            return self.fuse

        def add_rms_norm(self, x, residual, weight, eps):
            calls.append("fused")
            return x, residual

        def can_reduce(self, x):
            return True

        def __call__(self, x):
            calls.append("all_reduce")
            return x * 2   # as if a peer held the same partial sums

    x, residual, weight = torch.randn(3, 8), torch.randn(3, 8), torch.rand(8)
    monkeypatch.setattr(parallel_state._state, "size", 2)
    monkeypatch.setattr(parallel_state._state, "small_allreduce", FakeFastAllReduce(fuse=True))
    parallel_state.all_reduce_add_rms_norm(x, residual, weight, 1e-6)
    assert calls == ["fused"]
    calls.clear()
    monkeypatch.setattr(parallel_state._state, "small_allreduce", FakeFastAllReduce(fuse=False))
    out, res = parallel_state.all_reduce_add_rms_norm(x.clone(), residual, weight, 1e-6)
    assert calls == ["all_reduce"]
    from pagedawq.kernels import reference
    ref_out, ref_res = reference.fused_add_rms_norm(2 * x, residual, weight, 1e-6)
    assert torch.equal(res, ref_res) and torch.allclose(out, ref_out)


def test_row_parallel_layer_on_one_rank_hands_split_k_partials_to_the_norm(monkeypatch):
    """On one rank a row-parallel layer that leaves its reduction to the norm asks its linear method
    for split-K partials (``apply_split_k_partials``; the dense method and AWQ off Hopper return the
    output itself), and the norm adds them: the same result as the summed output. On several ranks
    the layer does not ask, and partials reaching the all-reduce are totalled first."""
    from pagedawq.distributed import parallel_state
    from pagedawq.kernels import reference
    from pagedawq.kernels.split_k import SplitKPartials
    from pagedawq.models.layers.linear import RowParallelLinear
    from pagedawq.models.layers.norm import RMSNorm
    gen = torch.Generator().manual_seed(5)
    x, residual = torch.randn(3, 16, generator=gen), torch.randn(3, 8, generator=gen)
    layer = RowParallelLinear(16, 8, bias=False, params_dtype=torch.float32, reduce_results=False)
    layer.weight.data.normal_(generator=gen)
    assert torch.equal(layer(x), x @ layer.weight.T)   # the dense method: the output itself
    slices = torch.randn(3, 3, 8, generator=gen)
    asked = []

    def partials(lay, inp):
        asked.append(inp)
        return SplitKPartials(slices, torch.float32)
    monkeypatch.setattr(layer.linear_method, "apply_split_k_partials", partials)
    norm = RMSNorm(8, 1e-6, torch.float32)
    norm.weight.data.uniform_(0.5, 1.5, generator=gen)
    out, res = norm(layer(x), residual, all_reduce_x=True)
    assert len(asked) == 1
    ref_out, ref_res = reference.fused_add_rms_norm(slices[0] + slices[1] + slices[2], residual, norm.weight, 1e-6)
    assert torch.equal(res, ref_res) and torch.equal(out, ref_out)

    monkeypatch.setattr(layer, "tp_size", 2)
    monkeypatch.setattr(parallel_state._state, "size", 2)
    monkeypatch.setattr(parallel_state._state, "small_allreduce", None)
    monkeypatch.setattr(parallel_state.dist, "all_reduce", lambda t, group=None: t.mul_(2))
    assert torch.allclose(layer(x), x @ layer.weight.T) and len(asked) == 1   # not asked on several ranks
    out, res = parallel_state.all_reduce_add_rms_norm(SplitKPartials(slices, torch.float32), residual,
                                                      norm.weight, 1e-6)
    assert torch.allclose(res, 2 * (slices[0] + slices[1] + slices[2]) + residual)


def test_row_parallel_layer_on_several_ranks_lets_its_gemm_push_for_the_norm(monkeypatch):
    """On several ranks a row-parallel layer whose norm takes the fused all-reduce asks its linear
    method to push the output (``apply_pushed``) with the all-reduce's target; what it returns, a
    ``PushedOutput``, goes to the pushed norm. Without a target (too many rows for the slots), or
    where the method cannot push (the dense one: None), the layer computes the output itself."""
    from pagedawq.distributed import parallel_state
    from pagedawq.models.layers.linear import RowParallelLinear
    # the classes parallel_state holds (tests/test_one_shot_allreduce.py may reload their module)
    PushedOutput, PushTarget = parallel_state.PushedOutput, parallel_state.PushTarget
    calls = []
    target = PushTarget(torch.zeros(5, dtype=torch.int64), 0, 2, 64)

    class FakeFastAllReduce:
        def push_target(self, rows, hidden, dtype):
            calls.append(("target", rows, hidden))
            return target if rows * hidden <= target.capacity else None

        def pushed_add_rms_norm(self, x, residual, weight, eps):
            calls.append(("pushed norm", tuple(x.shape)))
            return residual, residual

    monkeypatch.setattr(parallel_state._state, "size", 2)
    monkeypatch.setattr(parallel_state._state, "small_allreduce", FakeFastAllReduce())
    layer = RowParallelLinear(32, 8, bias=False, params_dtype=torch.float32, reduce_results=False)
    layer.weight.data.normal_()
    x = torch.randn(3, 16)
    assert torch.equal(layer(x), x @ layer.weight.T)   # the dense method cannot push
    assert calls == [("target", 3, 8)]

    def push(lay, inp, to):
        calls.append(("gemm", to is target))
        return PushedOutput(torch.Size((inp.shape[0], 8)), inp.dtype)
    monkeypatch.setattr(layer.linear_method, "apply_pushed", push, raising=False)
    calls.clear()
    out = layer(x)
    parallel_state.all_reduce_add_rms_norm(out, torch.zeros(3, 8), torch.ones(8), 1e-6)
    assert isinstance(layer(torch.randn(9, 16)), torch.Tensor)   # 9 x 8 outputs exceed the slots
    assert calls == [("target", 3, 8), ("gemm", True), ("pushed norm", (3, 8)), ("target", 9, 8)]


def test_gate_up_layer_applies_silu_and_mul_through_its_linear_method():
    """``forward_silu_and_mul`` (what the Llama MLP calls) is ``silu_and_mul(forward(x))``: dense with a
    bias and AWQ on the CPU (on Hopper the AWQ method fuses the two: tests/test_awq_wgmma_t.py)."""
    from pagedawq.kernels import reference
    from pagedawq.models.layers.linear import MergedColumnParallelLinear
    from pagedawq.quant.awq import AWQConfig
    x = torch.randn(3, 128, generator=torch.Generator().manual_seed(2))
    for quant, bias in ((None, True), (AWQConfig(4, 32, True), False)):
        (_, _, shards), = [c for c in _layer_cases() if c[0] == "merged" and (c[1] is None) == (quant is None)]
        layer = MergedColumnParallelLinear(128, [64, 64], bias=bias, params_dtype=torch.float32, quant_config=quant,
                                           feeds_silu_and_mul=True)
        _load(layer, shards)
        if bias:
            layer.bias.data.normal_()
        out = layer.forward_silu_and_mul(x)
        assert out.shape == (3, 64)
        torch.testing.assert_close(out, reference.silu_and_mul(layer(x)))
    with pytest.raises(ValueError, match="two equal output sizes"):
        MergedColumnParallelLinear(128, [64, 32], bias=False, params_dtype=torch.float32, feeds_silu_and_mul=True)
