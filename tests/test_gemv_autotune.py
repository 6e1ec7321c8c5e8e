"""Run-time GEMV tuning (``pagedawq.kernels.gemv_autotune``): the choice, its correctness guard,
the on-disk cache and its use by ``awq_gemm``. The kernels run in Triton's interpreter without
CUDA; the timer is a stand-in (the real one replays CUDA graphs)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tests.triton_interpreter import interpret_without_cuda

CUDA = interpret_without_cuda("pagedawq.kernels.awq_kernels", "pagedawq.kernels.awq_gemm",
                              "pagedawq.kernels.gemv_autotune")

from pagedawq.kernels import awq_configs, gemv_autotune  # noqa: E402

DEVICE = torch.device("cuda" if CUDA else "cpu")
N, K, GROUP = 64, 256, 64


@pytest.fixture(autouse=True)
def fresh_runtime_table(monkeypatch):
    """Each test starts from, and leaves behind, an empty run-time table."""
    monkeypatch.setattr(awq_configs, "RUNTIME_GEMV", {})
    awq_configs.gemv_config.cache_clear()
    awq_configs.choose.cache_clear()
    yield
    awq_configs.gemv_config.cache_clear()
    awq_configs.choose.cache_clear()


def prefers_no_scale_prefetch(cfg, fns) -> float:
    """A stand-in timer under which the "noSprefetch" candidate (register prefetch of the words
    only, no register cap) is 40% faster than the rest."""
    for f in fns:
        f()
    return 6.0 if (not cfg.prefetch_scales and cfg.maxnreg is None) else 10.0


def test_tunes_registers_and_caches(tmp_path, monkeypatch):
    path = tmp_path / "gemv_tuned.json"
    default = {bm: awq_configs.gemv_config(bm, N, K, GROUP, 132) for bm in (1, 2)}
    got = gemv_autotune.tune_gemv([(N, K, GROUP), (N, K, GROUP)], torch.float16, DEVICE,
                                  timer=prefers_no_scale_prefetch, path=path)
    expected = {(bm, N, K, GROUP): replace(default[bm], prefetch_scales=False) for bm in (1, 2)}
    assert got == expected
    for bm in (1, 2):   # awq_gemm's GEMV path now launches the tuned configuration
        assert awq_configs.gemv_config(bm, N, K, GROUP, 132) == expected[(bm, N, K, GROUP)]
    assert len(json.loads(path.read_text())) == 2

    def must_not_time(cfg, fns):
        raise AssertionError("a cached shape was timed again")
    awq_configs.RUNTIME_GEMV.clear()
    assert gemv_autotune.tune_gemv([(N, K, GROUP)], torch.float16, DEVICE, timer=must_not_time, path=path) == expected

    # Other kernel code: the cached choices are not reused.
    timed = []
    monkeypatch.setattr(gemv_autotune, "kernel_code_tag", lambda: "another-version")
    gemv_autotune.tune_gemv([(N, K, GROUP)], torch.float16, DEVICE, row_blocks=(1,), path=path,
                            timer=lambda cfg, fns: timed.append(cfg) or 10.0)
    assert timed and len(json.loads(path.read_text())) == 3


def test_a_candidate_with_wrong_output_is_never_chosen(tmp_path, monkeypatch):
    real_gemv = gemv_autotune.gemv

    def gemv_broken_without_prefetch(x, qweight, qzeros, scales, cfg, out):
        real_gemv(x, qweight, qzeros, scales, cfg, out)
        return out.mul_(1.5) if not cfg.prefetch_scales else out
    monkeypatch.setattr(gemv_autotune, "gemv", gemv_broken_without_prefetch)
    got = gemv_autotune.tune_gemv([(N, K, GROUP)], torch.float16, DEVICE, row_blocks=(1,),
                                  timer=prefers_no_scale_prefetch, path=tmp_path / "c.json")
    assert got[(1, N, K, GROUP)].prefetch_scales   # the "fast" but wrong candidate was rejected


def test_no_gain_keeps_the_default(tmp_path):
    default = awq_configs.gemv_config(2, N, K, GROUP, 132)
    almost = lambda cfg, fns: 10.0 if cfg == default else 9.8   # noqa: E731 - 2% faster: below MIN_GAIN
    got = gemv_autotune.tune_gemv([(N, K, GROUP)], torch.bfloat16, DEVICE, row_blocks=(2,), timer=almost,
                                  path=tmp_path / "c.json")
    assert got == {(2, N, K, GROUP): default}


def test_engine_collects_awq_shapes_and_tunes_only_on_cuda(tmp_path, tiny_llama_dir, monkeypatch):
    """``tune_kernels=True`` hands the model's AWQ shapes (this rank's shards) to the tuner on CUDA
    (greedy tokens unchanged); on the CPU it changes nothing."""
    monkeypatch.setenv("PAGEDAWQ_CACHE_DIR", str(tmp_path / "cache"))
    from pagedawq import LLM, SamplingParams
    from pagedawq.quant.awq import awq_gemv_shapes
    from tests.conftest import make_rtn_awq_checkpoint
    path, _ = make_rtn_awq_checkpoint(tiny_llama_dir, tmp_path / "awq", 32)
    prompt = [{"prompt_token_ids": [5, 6, 7]}]
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    outs = []
    for tune in (False, True):
        llm = LLM(str(path), device=DEVICE.type, dtype="float16" if CUDA else "float32", skip_tokenizer_init=True,
                  tune_kernels=tune, gpu_memory_utilization=0.3,
                  kv_cache_memory_bytes=16 * 2**20)
        outs.append(llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids)
        model = llm.llm_engine.executor.worker.runner.model
        hidden = llm.llm_engine.config.model.hf_config["hidden_size"]
        inter = llm.llm_engine.config.model.hf_config["intermediate_size"]
        llm.close()
    assert outs[0] == outs[1]
    shapes = awq_gemv_shapes(model)
    assert (2 * inter, hidden, 32) in shapes and (hidden, inter, 32) in shapes   # gate_up and down
    tuned = {(n, k, g) for (_, n, k, g) in awq_configs.RUNTIME_GEMV}
    assert tuned == (shapes if CUDA else set())
    # layers repacked for the Hopper "wgmma_t" path never run the GEMV: not tuned
    from pagedawq.quant.awq import AWQLinearMethod
    for m in model.modules():
        if isinstance(getattr(m, "linear_method", None), AWQLinearMethod):
            m.wgmma_t_weights = ("repacked", "weights")
    assert awq_gemv_shapes(model) == set()
