#!/usr/bin/env bash
# Small-M A/B of the AWQ "wgmma_t" kernels, this tree against main (.abmain), one call: a quick GPU
# correctness check (every config against float64 on three layers), then kernels.py --wgmma-t on the
# 7B and 13B/TP=2 layers at M = 1-32 for each tree. carry: [".abmain"], built with
#   rm -rf .abmain && mkdir .abmain && git archive main | tar -x -C .abmain
source benchmarks/gpu/env.sh
timeout 250 python -m pytest -q -x -rf --tb=short tests/test_awq_wgmma_t.py -k "every_config and (11008 or 13824 or 1536)" > $OUT/tests_gs.log 2>&1; tail -3 $OUT/tests_gs.log
for t in tree main; do
  root=.; [ $t = main ] && root=.abmain
  (cd $root/benchmarks && PYTHONPATH=$(cd .. && pwd) timeout 150 python kernels.py --wgmma-t --wgmma-t-models llama2-7b llama2-13b-tp2 --ms ${MS:-1 4 16 32} --out-dir $OUT > $OUT/wgmma_t_$t.log 2>&1)
  grep -E "^llama" $OUT/wgmma_t_$t.log | awk -v t=$t '{print t, $0}'
done
