"""benchmarks/gpu/probe/host_probe.py: with HOST_PROBE_DIR set, a process's decode-loop calls are
timed once their modules are imported, written every 64 calls and at exit, and summarized."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "benchmarks" / "gpu" / "probe"

SCRIPT = """
from pagedawq.engine.model_runner import PendingOutput
from pagedawq.engine.executor.channel_executor import ChannelExecutor
assert PendingOutput.result.__name__ == "timed", PendingOutput.result
assert ChannelExecutor.launch_model.__name__ == "timed"
for _ in range(70):
    assert PendingOutput([], None).result().token_ids == []
"""


def test_wraps_the_loop_calls_and_writes_their_durations(tmp_path):
    env = dict(os.environ, HOST_PROBE_DIR=str(tmp_path / "probe"),
               PYTHONPATH=os.pathsep.join([str(PROBE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, timeout=120)
    (record_file,) = (tmp_path / "probe").iterdir()
    records = [json.loads(line) for line in record_file.read_text().splitlines()]
    # a block of 64 calls, then the other 6 at exit
    assert [(r["name"], len(r["us"])) for r in records] == [("PendingOutput.result", 64), ("PendingOutput.result", 6)]
    assert all(us >= 0 for r in records for us in r["us"])
    summary = subprocess.run([sys.executable, str(PROBE / "host_probe.py"), str(tmp_path / "probe")],
                             capture_output=True, text=True, check=True).stdout
    assert "PendingOutput.result" in summary and "n=    6" in summary   # the first block skipped as warm-up


def test_without_the_variable_nothing_is_wrapped(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROBE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("HOST_PROBE_DIR", None)
    code = "from pagedawq.engine.model_runner import PendingOutput; assert PendingOutput.result.__name__ == 'result'"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
