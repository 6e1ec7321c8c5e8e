#!/usr/bin/env bash
# Session 42: what bounds 7B down at M <= 16 (issue 4: 2.94-2.99x cuBLAS against 3.0x)?
# experiments/small_m_stream_probe.py: STEP=shapes (the engine's choice and cuBLAS on K = 10240..11264 and
# N = 3968..4224: bytes or the busiest SM's share of the 4-way split), STEP=depths (the rule's tile and split
# with rings of 2-8 steps of 2 or 4 K tiles, with each one's slope in us a MB), STEP=calls (AWQ and cuBLAS per
# call from graphs of 8-128 calls, and the marginal call).
# nvidia-h100-x1, ~1 minute a step.
source benchmarks/gpu/env.sh
for step in ${STEP:-shapes depths calls}; do
  flag=$([ "$step" = shapes ] || echo --$step)
  python benchmarks/experiments/small_m_stream_probe.py $flag --ms ${MS:-1 16} --rounds ${ROUNDS:-3} 2>&1 \
    | tee "$OUT/small_m_$step.log"
done
