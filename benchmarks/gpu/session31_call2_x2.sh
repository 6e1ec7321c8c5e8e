#!/usr/bin/env bash
# Session 31, call 2 (nvidia-h200-x2 with needs_h200; carry .raycarry): the per-rank o and down GEMMs of
# the 13B at TP=2 (K = 2560 and 6912, N = 5120, M = 1) under other one-warpgroup configs, in the TP=2 step
# and graph (tp2_variants_x2.sh, RUNS rounds in turn). o's 40 K tiles in steps of 4 make 10 steps, which
# 4 slices take as 3, 3, 3, 1: steps of 2 K tiles (4 deep, the same K tiles in flight) make 5 each.
# SM/memory clocks of both cards logged every 200 ms meanwhile, and NCCL's init lines (rank -> busId).
source benchmarks/gpu/env.sh
nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader -lms 200 \
  > "$OUT/clocks.csv" 2>&1 &
clk=$!
at='/^    stages, k_tiles = (2, 4) if block_t <= 32/'
fix() { echo "$at"'a\    if (n, k) == (5120, '"$1"'): stages, k_tiles, split = '"$2"; }
export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT
RUNS=${RUNS:-2} VARIANTS="o_kt2|pagedawq/kernels/awq_configs.py|$(fix 2560 '4, 2, 4')
o_s2|pagedawq/kernels/awq_configs.py|$(fix 2560 '2, 4, 2')
down_s8|pagedawq/kernels/awq_configs.py|$(fix 6912 '4, 2, 8')
down_s2|pagedawq/kernels/awq_configs.py|$(fix 6912 '2, 4, 2')" bash benchmarks/gpu/tp2_variants_x2.sh
kill $clk
grep -h "busId" "$OUT"/tp2_tree_run1.log | grep -o "rank [0-9] nRanks 2.*busId [0-9a-f]*" | sort -u | head -4
python - "$OUT/clocks.csv" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = [s.strip() for s in line.split(",")]
    if len(f) == 6 and f[2].endswith("MHz"):
        rows[f[1]].append((int(f[2].split()[0]), int(f[3].split()[0]), float(f[4].split()[0])))
for gpu, r in sorted(rows.items()):
    busy = [x for x in r if x[2] > 150]   # samples while it ran kernels
    for name, s in (("all", r), ("busy", busy)):
        if s:
            sm = sorted(x[0] for x in s); mem = sorted(x[1] for x in s); pw = sorted(x[2] for x in s)
            print(f"GPU {gpu} {name}: {len(s)} samples, SM MHz median {sm[len(sm)//2]} min {sm[0]}, "
                  f"mem MHz median {mem[len(mem)//2]}, power median {pw[len(pw)//2]:.0f} W")
PY
