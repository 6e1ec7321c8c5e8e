"""One run of tp_suite's random GQA model at a TP size, for hang bisection (tp_hang_probe.sh): the
greedy tokens of a TP=1 run are saved, those of a TP > 1 run compared with them.

    python benchmarks/gpu/probe/tp_probe.py TP ray|mp float32|float16
"""
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from pagedawq import LLM, SamplingParams  # noqa: E402
from tests.conftest import make_rtn_awq_checkpoint, make_tiny_model  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tp, backend, dtype = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    t0 = time.time()
    path = make_tiny_model(Path(tempfile.mkdtemp()) / "gqa", "llama", hidden_size=256, intermediate_size=4096,
                           num_attention_heads=4, num_key_value_heads=2)
    if dtype == "float16":
        path, _ = make_rtn_awq_checkpoint(path, Path(tempfile.mkdtemp()) / "gqa_awq", 64)
    prompts = [{"prompt_token_ids": list(range(5 + i, 5 + i + n))} for i, n in enumerate((3, 40, 150, 17))]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    llm = LLM(str(path), dtype=dtype, tensor_parallel_size=tp, skip_tokenizer_init=True, gpu_memory_utilization=0.3,
              distributed_executor_backend=None if tp == 1 else backend)
    print(f"PROBE started tp={tp} {backend} {dtype} in {time.time() - t0:.0f} s", flush=True)
    outs = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    print(f"PROBE generated in {time.time() - t0:.0f} s", flush=True)
    ref = Path(f"/tmp/tp1_{dtype}.json")
    if tp == 1:
        ref.write_text(json.dumps(outs))
    else:
        same = sum(a == b for a, b in zip(outs, json.loads(ref.read_text())))
        print(f"PROBE tp={tp} {backend} {dtype}: equal to TP=1 for {same}/{len(prompts)}", flush=True)
    llm.close()


if __name__ == "__main__":
    main()
