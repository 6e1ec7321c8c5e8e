#!/usr/bin/env bash
# Per-kernel decode time of this tree against main (.abmain), 7B AWQ batch 1, PDL off (each kernel's
# time its own), then e2e decode for main and this tree once more. carry: [".abmain"].
source benchmarks/gpu/env.sh
for t in tree main; do
  root=.; [ $t = main ] && root=.abmain
  (cd $root/benchmarks && PAGEDAWQ_DISABLE_PDL=1 PYTHONPATH=$(cd .. && pwd) timeout 120 python decode_profile.py \
     --model llama-2-7b --output-len 32 --breakdown > $OUT/profile_$t.log 2>&1)
  grep -E "wall|top kernels|graph alone" $OUT/profile_$t.log | sed "s/^/$t /" | cut -c1-400
done
e2e_decode main2 .abmain "awq batch|fp16 batch 1 |failed"
e2e_decode tree3 . "awq batch|fp16 batch 1 |failed"
