"""Where a process's tensors live (loaded by sitecustomize.py when DEVICE_PROBE_DIR is set): does a
tensor-parallel rank read any tensor from another rank's GPU?

Every rank sees every GPU (Ray's CUDA_VISIBLE_DEVICES rewriting is off), so a tensor made for
"cuda" before ``torch.cuda.set_device``, or for a hard-coded index, lands on GPU 0 and a rank-1
kernel reading it goes over NVLink. Session 31 found rank 1's decode, o and down ~0.2-0.4 µs slower
than rank 0's whichever card it ran on. From DEVICE_PROBE_DELAY_S seconds after start (default 20),
and again every DEVICE_PROBE_EVERY_S (default 5) until the process ends, a daemon thread writes
DEVICE_PROBE_DIR/<pid>.json: the tensors that the garbage collector tracks grouped by device (count
and bytes), and up to 20 of those away from the device holding the most bytes listed. The last
census written is the one taken closest to the end. Session 32 (2xH200): each rank's tensors were
all on its own GPU, and nvidia-smi showed one context a process.
"""
from __future__ import annotations

import gc
import json
import os
import threading
import time
import warnings
from collections.abc import Iterable

LISTED = 20


def census(objects: Iterable[object], home: str | None = None) -> dict:
    """The tensors among ``objects`` by device: ``{"home": home, "devices": {device: [count, bytes]},
    "elsewhere": [[device, shape, dtype], ...]}``, where ``elsewhere`` lists up to ``LISTED`` tensors
    not on ``home`` (a device string such as "cuda:1"; by default the device holding the most bytes,
    a rank's own GPU: the probe's thread cannot ask the rank's, since the current device is a
    thread's own and the probe's reads cuda:0 in every process, session 32)."""
    import torch
    tensors = [obj for obj in objects if isinstance(obj, torch.Tensor)]
    devices: dict[str, list[int]] = {}
    for t in tensors:
        count_bytes = devices.setdefault(str(t.device), [0, 0])
        count_bytes[0] += 1
        count_bytes[1] += t.numel() * t.element_size()
    if home is None:
        home = max(devices, key=lambda d: devices[d][1]) if devices else "cpu"
    elsewhere = [[str(t.device), list(t.shape), str(t.dtype)] for t in tensors if str(t.device) != home][:LISTED]
    return {"home": home, "devices": devices, "elsewhere": elsewhere}


def _report(directory: str) -> None:
    with warnings.catch_warnings():   # isinstance on some deprecated objects (torch.distributed.reduce_op) warns
        warnings.simplefilter("ignore")
        record = {"pid": os.getpid(), **census(gc.get_objects())}
    with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as f:
        json.dump(record, f)


def install() -> None:
    directory = os.environ["DEVICE_PROBE_DIR"]
    os.makedirs(directory, exist_ok=True)
    delay = float(os.environ.get("DEVICE_PROBE_DELAY_S", "20"))
    every = float(os.environ.get("DEVICE_PROBE_EVERY_S", "5"))

    def run() -> None:
        time.sleep(delay)
        while True:
            _report(directory)
            time.sleep(every)
    threading.Thread(target=run, name="device_probe", daemon=True).start()
