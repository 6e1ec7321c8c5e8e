#!/usr/bin/env bash
# Session 31, call 4 (nvidia-h200-x2 with needs_h200; carry .raycarry): call 3 found rank 1's kernels
# ~1 us a layer slower than rank 0's whichever card it runs on. The one rank-dependent order in a
# layer's kernels is the pushed GEMMs' stores (_push_tile: buffer 0, then 1, so rank 0 stores its own
# slot first and rank 1 its peer's). Variants: every rank stores its peers' slots first, or its own
# first; the TP=2 step and graph, RUNS rounds in turn. (As run, the variants were copies of the file
# with these patches applied, carried as cp: variants; both lost.)
RUNS=${RUNS:-2} VARIANTS="remote_first|pagedawq/kernels/awq_wgmma_t.py|patch:benchmarks/gpu/patches/push_remote_first.patch
local_first|pagedawq/kernels/awq_wgmma_t.py|patch:benchmarks/gpu/patches/push_local_first.patch" \
  bash benchmarks/gpu/tp2_variants_x2.sh
