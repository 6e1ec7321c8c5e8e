#!/usr/bin/env bash
# Bisect a TP=4 hang of tp_suite's correctness model: variants of the fp32 TP=4 run, each with a
# time limit, Python stacks of every process dumped every 30 s. carry: [".raycarry"]. 4 GPUs.
source benchmarks/gpu/env.sh
export PYTHONPATH=$PWD/benchmarks/gpu/probe:$PYTHONPATH HANG_DUMP_S=30
probe() {  # TAG LIMIT ARGS...
  local tag=$1 lim=$2; shift 2
  HANG_DUMP_DIR=/tmp/dumps/$tag timeout -k 5 "$lim" python benchmarks/gpu/probe/tp_probe.py "$@" > "/tmp/log_$tag.txt" 2>&1
  echo "$tag rc=$?"; grep PROBE "/tmp/log_$tag.txt"
  pkill -9 -f tp_probe.py; pkill -9 -f raylet; pkill -9 -f gcs_server; ray stop --force > /dev/null 2>&1; sleep 2
}
probe tp1 60 1 mp float32
for v in ${VARIANTS:-default:ray noge:ray nosymm:ray mp:mp}; do
  case ${v%%:*} in noge) export PAGEDAWQ_DISABLE_GREEDY_EXCHANGE=1;; nosymm) export PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1;; esac
  probe "$v" 75 4 "${v#*:}" float32
  unset PAGEDAWQ_DISABLE_GREEDY_EXCHANGE PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE
done
tar -czf "$OUT/dumps.tgz" /tmp/dumps /tmp/log_*.txt 2>/dev/null
