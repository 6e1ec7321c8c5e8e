#!/usr/bin/env bash
# The push one-shot all-reduce (pagedawq/kernels/one_shot_allreduce.py: each rank pushes its input into
# its peers' receive slots, epoch flags, two parities, no exit barrier, 16-byte accesses) against the
# pull version it replaced (the tree of .abmain, built from the commit before it: git archive 8fd518d),
# one call on a 2-GPU kind (session 9: 2 x H100):
# 1. GPU tests: the kernels on 2 ranks against NCCL (sizes, graph replays), the engine's probe path;
# 2. allreduce.py at 2 ranks (in a CUDA graph, against NCCL): push (this tree) then pull (.abmain);
# 3. 13B AWQ batch-1 latency TP=1 / TP=2 (+ correctness) with push, then TP=2 with pull.
# carry: [".raycarry", ".abmain"]; about 4 minutes.
source benchmarks/gpu/env.sh
MAIN_PATH="$PWD/.abmain:$PYTHONPATH"
timeout 150 python -m pytest -q -rf --tb=short tests/test_one_shot_allreduce.py > "$OUT/tests.log" 2>&1
grep -E "passed|failed|^E  " "$OUT/tests.log" | head -20
cd benchmarks
timeout 60 python allreduce.py --world-size 2 --dtype float16 > "$OUT/allreduce_push.log" 2>&1
(cd ../.abmain/benchmarks && PYTHONPATH=$MAIN_PATH timeout 60 python allreduce.py --world-size 2 --dtype float16 \
  > "$OUT/allreduce_pull.log" 2>&1)
paste <(grep -vi warn "$OUT/allreduce_push.log" | tail -10) <(grep -vi warn "$OUT/allreduce_pull.log" | tail -10)
timeout 200 python tp_suite.py --tp 2 --num-prompts 0 > "$OUT/tp2_push.log" 2>&1
grep -E "^latency|^correct|failed" "$OUT/tp2_push.log"
(cd ../.abmain/benchmarks && PYTHONPATH=$MAIN_PATH timeout 100 python tp_suite.py --tp 2 --sizes 2 --num-prompts 0 \
  --skip-correctness > "$OUT/tp2_pull.log" 2>&1)
grep -E "^latency|failed" "$OUT/tp2_pull.log" | sed 's/^/pull: /'
