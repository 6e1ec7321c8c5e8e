#!/usr/bin/env bash
# Ceilings of the 13B AWQ batch-1 decode chain (issue 6, session 23): the step and graph at TP=1 and
# TP=2 of this tree and of two variants that drop a part of each layer. Their outputs are garbage;
# only their times mean something, and only as bounds:
# - nonorm: both residual-add + RMSNorms of every layer (and the TP all-reduce fused in them) return
#   the residual untouched, so no norm kernel runs: the most any fusion of the norm into its
#   neighbouring GEMMs could save.
# - noattn: the attention (rotary + KV write, decode, split reduce) is skipped; o_proj reads an
#   uninitialised buffer: the most any attention change could save.
# carry: [".raycarry"]; ~4-5 minutes.
TP_TIMEOUT=140 SIZES="1 2" RUNS=${RUNS:-1} VARIANTS="nonorm|pagedawq/models/layers/norm.py|s/return all_reduce_add_rms_norm(x, residual, self.weight, self.eps)/return residual, residual/;s/return ops.fused_add_rms_norm(x, residual, self.weight, self.eps)/return residual, residual/
noattn|pagedawq/models/llama.py|s/return self.o_proj(self.attn(q, k, v, self.rotary_emb.rope(positions)))/return self.o_proj(torch.empty_like(q))/" \
  bash benchmarks/gpu/tp2_variants_x2.sh
