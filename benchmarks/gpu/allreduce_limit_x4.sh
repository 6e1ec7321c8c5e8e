#!/usr/bin/env bash
# The one-shot all-reduce's size limit in the engine (session 19 raised it to 1 MiB / ranks from
# 256 KiB / ranks on the kernel table alone): the Llama-2-70B AWQ shape at TP=4, decode batches
# BATCHES (default "16 8"; 16 rows of 8192 fp16 = 256 KiB a call), this tree against a copy with the
# old limit, alternating (decode_profile.py --breakdown: the batch's step wall time, rank 0's kernel
# time and all-reduce share, and the decode graph replayed alone). carry: [".raycarry"]; ~8 minutes.
source benchmarks/gpu/env.sh
old=/tmp/variant_old_limit
variant_tree "$old" pagedawq/distributed/symm_mem_allreduce.py \
  's|return (1 << 20) // max(world_size, 1)|return (1 << 18) // max(world_size, 1)|' || exit 1
for b in ${BATCHES:-16 8}; do
  for t in tree:. old:$old; do
    (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 140 python decode_profile.py --model llama-2-70b \
       --quantization awq --tp 4 --batch "$b" --output-len 32 --breakdown --no-table > "$OUT/limit_${t%%:*}_b$b.log" 2>&1)
    grep -E "us/token|graph alone \(rank 0|all-reduce|rror" "$OUT/limit_${t%%:*}_b$b.log" | sed "s/^/${t%%:*} batch $b: /" | cut -c1-200
  done
done
