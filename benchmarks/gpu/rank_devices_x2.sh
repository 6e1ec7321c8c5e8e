#!/usr/bin/env bash
# Does a tensor-parallel rank read tensors on the other rank's GPU? (Session 31: rank 1's decode, o and
# down are ~0.2-0.4 us slower than rank 0's whichever card it runs on.) The 13B TP=2 latency run of
# tp_suite.py, with every Python process's tensors counted by device (probe/device_probe.py, the last
# census before each process ended) and nvidia-smi's per-process view of both GPUs midway (a process
# with a context on a GPU it does not compute on shows there too). ~1.5 minutes.
# carry: [".raycarry"]
source benchmarks/gpu/env.sh
export DEVICE_PROBE_DIR="$OUT/devices" PYTHONPATH="$PWD/benchmarks/gpu/probe:$PYTHONPATH"
(cd benchmarks && timeout 150 python tp_suite.py --sizes 2 --skip-correctness --num-prompts 0 > "$OUT/tp2.log" 2>&1) &
sleep ${APPS_AT_S:-30}
nvidia-smi --query-compute-apps=pid,gpu_bus_id,used_memory --format=csv | tee "$OUT/compute_apps.csv"
wait
grep -E "^latency|^graph|failed|Ray workers" "$OUT/tp2.log" | cut -c1-130
python - "$OUT/devices" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    if any(d.startswith("cuda") for d in r["devices"]):
        print(r["pid"], "home", r["home"], "devices", r["devices"], "elsewhere", r["elsewhere"][:8])
PY
