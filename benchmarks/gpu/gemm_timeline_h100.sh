#!/usr/bin/env bash
# Session 42: where 7B down's fixed ~3.2 us a call goes at M <= 16 (issue 4). experiments/gemm_timeline_probe.py
# in a copy of this tree with patches/gemm_timeline.patch (each clustered CTA writes its SM and the global timer
# at entry, PDL wait, first data, loop end and exit), three ways:
# - main: as the engine launches it;
# - nopdl: PAGEDAWQ_DISABLE_PDL=1 (no early launch, no weights requested before the previous call ends);
# - early: the PDL trigger (launch_dependents) right after the wait instead of after the K loop, so the next
#   call's CTAs can take free slots and request their first weights while this one streams.
# nvidia-h100-x1, ~1 minute.
source benchmarks/gpu/env.sh
variant_tree /tmp/timeline pagedawq/kernels/awq_wgmma_t.py "patch:benchmarks/gpu/patches/gemm_timeline.patch" || exit 1
rm -rf /tmp/timeline_early && cp -r /tmp/timeline /tmp/timeline_early
python - <<'PY'
p = "/tmp/timeline_early/pagedawq/kernels/awq_wgmma_t.py"
s = open(p).read()
late = '''    if PDL:   # the next kernel may be scheduled now; it waits for this one to finish (pdl.py)
        _griddep("launch_dependents")
'''
assert s.count(late) == 1
s = s.replace(late, "")
s = s.replace('''    if TRACE:
        gl.store(tr + 2, _now())''', '''    if TRACE:
        gl.store(tr + 2, _now())
    if PDL:
        _griddep("launch_dependents")''')
open(p, "w").write(s)
PY
for v in main nopdl early; do
  dir=/tmp/timeline; env=""
  [ $v = nopdl ] && env="PAGEDAWQ_DISABLE_PDL=1"
  [ $v = early ] && dir=/tmp/timeline_early
  echo "== $v"
  (cd $dir && env $env PYTHONPATH=$dir TRITON_CACHE_DIR=/tmp/tc_timeline_$v \
     python benchmarks/experiments/gemm_timeline_probe.py --save "$OUT/trace_$v" ${ARGS:-}) 2>&1 | tee -a "$OUT/gemm_timeline_$v.log" | grep -v "^NVIDIA"
done
