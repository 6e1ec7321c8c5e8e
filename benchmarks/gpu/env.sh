# Sourced by the scripts here: safety switches and Python path for the device machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .raycarry ]; then
  bash .raycarry/install.sh && export PYTHONPATH=/tmp/raysite:$PYTHONPATH RAY_AUTH_MODE=disabled
fi
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader

# e2e_decode TAG ROOT [PATTERN]: 7B decode (e2e_suite.py --sections decode) of the tree at ROOT, log
# to $OUT/e2e_TAG.log, the lines matching PATTERN printed with TAG in front (the warm-up's progress
# bar ends in a carriage return, and the next result line follows it on the same line).
e2e_decode() {
  (cd "$2/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout "${E2E_LIMIT:-125}" python e2e_suite.py --sections decode \
     > "$OUT/e2e_$1.log" 2>&1)
  tr '\r' '\n' < "$OUT/e2e_$1.log" | grep -E "${3:-^decode|^prefill|failed}" | sed "s/^/$1 /"
}

# graph_alone TAG ROOT: the 7B AWQ decode graph (batch GRAPH_BATCH, default 1) of the tree at ROOT
# replayed alone (PDL on), log to $OUT/graph_TAG.log, its "graph alone" line printed with TAG in
# front. ROOT's own decode_profile.py runs: its common.py puts its own tree first on sys.path, so a
# script of another tree would measure that tree (sessions 13-38 did: every ROOTS / VARIANTS graph
# was this tree's). The run's "package:" line must name ROOT, or the result is refused.
graph_alone() {
  (cd "$2/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 120 python decode_profile.py \
     --model llama-2-7b --output-len 32 --breakdown --no-table --batch "${GRAPH_BATCH:-1}" > "$OUT/graph_$1.log" 2>&1)
  local want used
  want=$(cd "$2" && pwd -P)
  used=$(sed -n 's/^package: //p' "$OUT/graph_$1.log")
  if [ "$used" != "$want" ]; then echo "$1: measured the package at '${used:-?}', not $want: refused"; return 1; fi
  grep -h "graph alone" "$OUT/graph_$1.log" | sed "s/^ */$1: /" | cut -c1-100
}

# variant_tree DIR FILE EXPR: a copy of this tree (tracked and untracked, not ignored files) at DIR
# with FILE edited by the sed expression EXPR, or with "cp:PATH" copied over it, or with the patch
# "patch:PATH" applied (FILE: one file it changes); fails (status 1, with a message) where that
# changed nothing.
variant_tree() {
  local root=$PWD
  rm -rf "$1" && mkdir -p "$1" && git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$1"
  if [[ $3 == cp:* ]]; then cp "${3#cp:}" "$1/$2"
  elif [[ $3 == patch:* ]]; then (cd "$1" && git apply "$root/${3#patch:}")
  else sed -i "$3" "$1/$2"; fi
  if cmp -s "$2" "$1/$2"; then echo "$(basename "$1"): the edit changed nothing in $2, skipped"; return 1; fi
}

# tree_suite NAME DIR LIMIT LOG ARGS...: tp_suite.py ARGS in the tree at DIR under its own Triton
# cache (/tmp/tc_NAME: Triton 3.6 keys its cache on the kernels' source, not on a compile hook such
# as l2_hints'), log to $OUT/LOG.log, its result lines printed with NAME in front.
tree_suite() {
  local name=$1 dir=$2 limit=$3 log=$4
  shift 4
  (cd "$dir/benchmarks" && TRITON_CACHE_DIR=/tmp/tc_$name PYTHONPATH="$dir:$PYTHONPATH" timeout "$limit" \
     python tp_suite.py "$@" > "$OUT/$log.log" 2>&1)
  tr '\r' '\n' < "$OUT/$log.log" | grep -E "^kv cache|warm-up:|^latency|^graph|^throughput|failed|Error" | cut -c1-150 \
    | sed "s/^/$name: /"
}
