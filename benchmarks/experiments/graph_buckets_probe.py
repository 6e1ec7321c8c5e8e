"""GPU time of each context bucket's batch-1 decode graph (13B AWQ, dummy weights, TP=1) replayed
back to back after a timed generation, at set context lengths.

Written to check session 29's context buckets: the graph of each bucket that holds a context against
the max_model_len graph, at contexts of 100-400 tokens.

    PYTHONPATH=. python benchmarks/experiments/graph_buckets_probe.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import decode_timing, shape_dir  # noqa: E402

from pagedawq import LLM  # noqa: E402

llm = LLM(shape_dir("llama-2-13b"), load_format="dummy", skip_tokenizer_init=True, dtype="float16",
          quantization="awq", max_model_len=4096)
graphs = llm.llm_engine.executor.worker.runner.graphs
print("contexts of batch 1:", graphs.contexts[1], flush=True)
timing = decode_timing(llm, 1, 32, 128)
print(f"step {1000 * timing.step:.3f} ms, beyond {1000 * timing.fixed:.1f} ms", flush=True)
for ctx in (100, 159, 240, 400):
    graphs.seq_lens[0] = ctx   # the replays attend over ctx tokens (blocks past the last step's: block 0)
    times = {b: llm.llm_engine.time_decode_graph(1, context_len=b)[0]["gpu_us"]
             for b in graphs.contexts[1] if b >= ctx}
    print(f"context {ctx}: " + ", ".join(f"graph (1, {b}) {t:.1f} us" for b, t in times.items()), flush=True)
llm.close()
