"""benchmarks/gpu/probe/device_probe.py: the census groups tensors by device and lists the ones away
from home; with DEVICE_PROBE_DIR set, a process writes its census after the delay."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "benchmarks" / "gpu" / "probe"
sys.path.insert(0, str(PROBE))
import device_probe  # noqa: E402


def test_census_counts_tensors_by_device_and_lists_those_away_from_home():
    objects = [torch.zeros(3, dtype=torch.float32), "not a tensor", torch.empty(2, 5, dtype=torch.int64, device="meta"),
               torch.ones(4, dtype=torch.float16)]
    result = device_probe.census(objects, home="cpu")
    assert result["devices"] == {"cpu": [2, 3 * 4 + 4 * 2], "meta": [1, 2 * 5 * 8]}
    assert result["elsewhere"] == [["meta", [2, 5], "torch.int64"]]


def test_census_takes_the_device_with_the_most_bytes_for_home():
    objects = [torch.zeros(3), torch.empty(100, device="meta"), torch.empty(1, device="meta")]
    result = device_probe.census(objects)
    assert result["home"] == "meta" and result["elsewhere"] == [["cpu", [3], "torch.float32"]]
    assert device_probe.census([])["home"] == "cpu"


def test_census_lists_at_most_a_few_tensors_away_from_home():
    result = device_probe.census([torch.empty(1, device="meta")] * 50, home="cpu")
    assert result["devices"] == {"meta": [50, 200]} and len(result["elsewhere"]) == device_probe.LISTED


def test_a_process_writes_its_census_after_the_delay(tmp_path):
    env = dict(os.environ, DEVICE_PROBE_DIR=str(tmp_path / "probe"), DEVICE_PROBE_DELAY_S="4",
               PYTHONPATH=os.pathsep.join([str(PROBE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    script = ("import time, torch; big = torch.zeros(1 << 20); kept = torch.empty(7, 3, device='meta'); "
              "time.sleep(8)")   # torch imports within the delay; the 4 MiB make the CPU home
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    (record_file,) = (tmp_path / "probe").iterdir()
    record = json.loads(record_file.read_text())
    assert record["home"] == "cpu" and record["pid"] == int(record_file.stem)
    assert record["devices"]["meta"][0] >= 1 and ["meta", [7, 3], "torch.float32"] in record["elsewhere"]
