#!/usr/bin/env bash
# Where a layer's time goes on each rank: Chrome traces of the 13B AWQ batch-1 decode (decode_profile.py,
# 48 tokens) at TP=2 (both ranks) and TP=1, each summarised by trace_steps.py --segments (median exposed
# µs of each kernel by its place in a layer, over every layer of the window). A rank whose GEMMs run
# longer than the other's shows as a shorter all-reduce wait on that rank and a longer one on the other.
# Then the TP=1 step and graph on each GPU of the pair alone (CUDA_VISIBLE_DEVICES): a TP=2 step is
# paced by the slower card, a TP=1 run by the card it gets.
# SIZES: the TP sizes traced (default "2 1"); CARDS: the cards timed alone (default "0 1"; empty: none);
# PROFILE_ARGS: more decode_profile.py arguments (e.g. "--backend mp").
# carry: [".raycarry"]; ~3 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
for tp in ${SIZES:-2 1}; do
  timeout 110 python decode_profile.py --tp $tp --output-len 48 --trace-dir "$OUT/traces" ${PROFILE_ARGS:-} > "$OUT/profile_tp$tp.log" 2>&1
  python trace_steps.py "$OUT"/traces/tp$tp/rank*.json --top 8 | tee "$OUT/trace_steps_tp$tp.log" | cut -c1-150
  for r in "$OUT"/traces/tp$tp/rank*.json; do
    python trace_steps.py "$r" --segments _ --skip 2 > "$OUT/segments.tmp"   # (head on a pipe would cut it off)
    head -6 "$OUT/segments.tmp" | cut -c1-220 | tee -a "$OUT/trace_segments_tp$tp.log"
    gzip -f "$r"
  done
  rm -f "$OUT/segments.tmp"
done
for gpu in ${CARDS-0 1}; do
  CUDA_VISIBLE_DEVICES=$gpu timeout 120 python tp_suite.py --sizes 1 --skip-correctness --num-prompts 0 \
    > "$OUT/tp1_gpu$gpu.log" 2>&1
  grep -E "^latency|^graph|failed" "$OUT/tp1_gpu$gpu.log" | sed "s/^/GPU $gpu: /" | cut -c1-130
done
