"""Where a process's tensors live (loaded by sitecustomize.py when DEVICE_PROBE_DIR is set): does a
tensor-parallel rank read any tensor from another rank's GPU?

Every rank sees every GPU (Ray's CUDA_VISIBLE_DEVICES rewriting is off), so a tensor made for
"cuda" before ``torch.cuda.set_device``, or for a hard-coded index, lands on GPU 0 and a rank-1
kernel reading it goes over NVLink. Session 31 found rank 1's decode, o and down ~0.2-0.4 µs slower
than rank 0's whichever card it ran on. From DEVICE_PROBE_DELAY_S seconds after start (default 20),
and again every DEVICE_PROBE_EVERY_S (default 5) until the process ends, a daemon thread writes
DEVICE_PROBE_DIR/<pid>.json: the process's current CUDA device, and the tensors that the garbage
collector tracks grouped by device (count and bytes), with up to 20 of those not on the current
device listed. The last census written is the one taken closest to the end.
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


def census(objects: Iterable[object], home: str) -> dict:
    """The tensors among ``objects`` by device: ``{"devices": {device: [count, bytes]}, "elsewhere":
    [[device, shape, dtype], ...]}``, where ``elsewhere`` lists up to ``LISTED`` tensors not on
    ``home`` (a device string such as "cuda:1")."""
    import torch
    devices: dict[str, list[int]] = {}
    elsewhere: list[list] = []
    for obj in objects:
        if not isinstance(obj, torch.Tensor):
            continue
        device = str(obj.device)
        count_bytes = devices.setdefault(device, [0, 0])
        count_bytes[0] += 1
        count_bytes[1] += obj.numel() * obj.element_size()
        if device != home and len(elsewhere) < LISTED:
            elsewhere.append([device, list(obj.shape), str(obj.dtype)])
    return {"devices": devices, "elsewhere": elsewhere}


def _report(directory: str) -> None:
    import torch
    home = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_initialized() else "cpu"
    with warnings.catch_warnings():   # isinstance on some deprecated objects (torch.distributed.reduce_op) warns
        warnings.simplefilter("ignore")
        record = {"pid": os.getpid(), "home": home, **census(gc.get_objects(), home)}
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
