"""Host time of ``CUDAGraph.replay()`` for the engine's batch-1 decode graph and for graphs of its
parts (Llama-2-7B shape, AWQ, dummy weights).

Written to check a profiler-run reading that replay() held the host for the whole GPU time; without
the profiler in the process every graph here returns in 3-12 us (H100, 2026-11-26).

    PYTHONPATH=. python benchmarks/experiments/graph_replay_probe.py
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402
from common import shape_dir  # noqa: E402

from pagedawq import LLM  # noqa: E402
from pagedawq.attention.metadata import forward_context  # noqa: E402

def probe(name, fn, n):
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay(); torch.cuda.synchronize()
    hs = []
    for _ in range(10):
        torch.cuda.synchronize(); t = time.perf_counter(); g.replay(); hs.append(1e6 * (time.perf_counter() - t))
        torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); g.replay(); b.record(); b.synchronize()
    print(f"{name:<28} x{n}: replay() host {sorted(hs)[5]:7.0f} us, GPU {a.elapsed_time(b) * 1000:7.0f} us", flush=True)

llm = LLM(shape_dir("llama-2-7b"), load_format="dummy", skip_tokenizer_init=True, dtype="float16", quantization="awq",
          max_model_len=1024, max_num_seqs=1)
runner = llm.llm_engine.executor.worker.runner
graph, _ = runner.graphs.graph_for(1, 1024)
hs = []
for _ in range(10):
    torch.cuda.synchronize(); t = time.perf_counter(); graph.replay(); hs.append(1e6 * (time.perf_counter() - t))
print(f"engine decode graph: replay() host {sorted(hs)[5]:.0f} us", flush=True)
model = runner.model
layer = model.model.layers[0]
attn, mlp = layer.self_attn, layer.mlp
g = runner.graphs
meta = g._metadata(1, 1024)
x = torch.randn(1, 4096, device="cuda", dtype=torch.float16)
h = torch.randn(1, 11008, device="cuda", dtype=torch.float16)
pos = g.positions[:1]
with torch.inference_mode():
    probe("qkv gemv", lambda: attn.qkv_proj(x), 64)
    probe("gate_up gemv", lambda: mlp.gate_up_proj(x), 64)
    probe("down gemv", lambda: mlp.down_proj(h), 64)
    probe("rms_norm", lambda: layer.input_layernorm(x), 64)
    probe("rotary", lambda: attn.rotary_emb.rope(pos).apply(torch.randn(1, 32, 128, device="cuda", dtype=torch.float16),
                                                            torch.randn(1, 32, 128, device="cuda", dtype=torch.float16)), 16)
    probe("mlp", lambda: mlp(x), 32)
    with forward_context(meta):
        q = torch.randn(1, 4096, device="cuda", dtype=torch.float16)
        probe("attention core", lambda: attn.attn(q, q, q), 32)
        probe("attention block", lambda: attn(pos, x), 32)
        probe("decoder layer", lambda: layer(pos, x, x), 32)
        probe("embedding", lambda: model.model.embed_tokens(g.input_ids[:1]), 32)
