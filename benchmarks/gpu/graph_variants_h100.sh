#!/usr/bin/env bash
# The batch-1 (GRAPH_BATCH) decode graph replayed alone (7B AWQ, PDL on; decode_profile.py --breakdown), for this
# tree and for variants of it made by sed, each timed RUNS times (default 2) in turn: the measure
# that ranked small-M kernel candidates the way decode does in sessions 9-10 (two runs agree within
# ~0.5%). One variant a line of VARIANTS: "name|file|sed expression", e.g.
#   VARIANTS='gs32|pagedawq/kernels/awq_wgmma_t.py|s/^GROUP_SCALE_MAX_T = gl.constexpr(64)/GROUP_SCALE_MAX_T = gl.constexpr(32)/'
# "cp:PATH" in place of the sed copies the file at PATH (in this tree) over it; "patch:PATH" applies
# that patch (env.sh's variant_tree). A sed that changes
# nothing is reported and the variant skipped. With LAYERS (e.g. "down"), each
# root's kernels.py --wgmma-t rows for those 7B layers at MS (default 1 16 64) follow its graph runs.
source benchmarks/gpu/env.sh
roots=("tree:." $ROOTS)   # ROOTS: more trees as "name:dir", e.g. "main:.abmain" (carried)
while IFS='|' read -r name file expr; do
  [ -z "$name" ] && continue
  variant_tree "/tmp/variant_$name" "$file" "$expr" && roots+=("$name:/tmp/variant_$name")
done <<< "$VARIANTS"
for r in $(seq 1 "${RUNS:-2}"); do
  for entry in "${roots[@]}"; do
    graph_alone "${entry%%:*}_run$r" "${entry#*:}"
  done
done
[ -z "$LAYERS" ] && exit 0
for entry in "${roots[@]}"; do
  name=${entry%%:*}
  mkdir -p "$OUT/sweep_$name"
  (cd "${entry#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 150 python kernels.py --wgmma-t \
     --wgmma-t-models llama2-7b --wgmma-t-layers $LAYERS --ms ${MS:-1 16 64} --out-dir "$OUT/sweep_$name" > "$OUT/kernels_$name.log" 2>&1)
  grep -E "^llama|Error|error" "$OUT/kernels_$name.log" | sed "s/^/$name /"
done
