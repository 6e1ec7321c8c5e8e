"""Batch-1 decode pace and graph time per context bucket (13B AWQ, dummy weights, TP=1).

Written for session 40's clustered split merge: ``tp_suite.py``'s latency after 32-token prompts
times steps at contexts 64-128 (the middle half of 128 steps), all in the 128 bucket (4 splits on
the 13B), while its "graph alone" replays the 256 bucket (8 splits) of the generation's last step. Here each prompt length is
chosen so that the middle half of its steps lies in one bucket, and that bucket's graph is replayed
alone at a context inside it: pace and graph of the same kernels.

With ``--batches`` it does the same for batches of several sequences (each a captured graph size).
At 4 and 8 sequences the 13B's graphs split every context 4 and 2 ways (on Hopper the 4 merge in a
thread-block cluster, ``paged_attention.decode_clusters``; the 2 keep the reduce since session 41).

    PYTHONPATH=. python benchmarks/experiments/decode_bucket_pace.py --input-lens 32 160 400 900
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import decode_timing, shape_dir  # noqa: E402

from pagedawq import LLM  # noqa: E402

N_OUT = 128


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--input-lens", type=int, nargs="+", default=[32, 160, 400, 900])
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--label", default="", help="printed in front of every line")
    args = p.parse_args()
    llm = LLM(shape_dir("llama-2-13b"), load_format="dummy", skip_tokenizer_init=True, dtype="float16",
              quantization="awq", max_model_len=4096)
    graphs = llm.llm_engine.executor.worker.runner.graphs
    for batch in args.batches:
        bounds = graphs.contexts[batch]
        print(f"{args.label} batch-{batch} context bounds {bounds}", flush=True)
        for n_in in args.input_lens:
            lo, hi = n_in + N_OUT // 4, n_in + N_OUT - N_OUT // 4   # the contexts of the timed steps
            bucket = next(b for b in bounds if b >= hi)
            mixed = "" if next(b for b in bounds if b >= lo) == bucket else " (spans two buckets)"
            timing = decode_timing(llm, batch, n_in, N_OUT)
            graphs.seq_lens[:batch] = hi   # the replays attend over hi tokens a sequence
            gpu = llm.llm_engine.time_decode_graph(batch, context_len=bucket)[0]["gpu_us"]
            print(f"{args.label} batch {batch} prompt {n_in}: contexts {lo}-{hi}, bucket {bucket}{mixed}: step "
                  f"{1000 * timing.step:.3f} ms, median {1000 * timing.median_step:.3f} ms; graph alone at {hi} "
                  f"{gpu / 1000:.3f} ms", flush=True)
    llm.close()


if __name__ == "__main__":
    main()
