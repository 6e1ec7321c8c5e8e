"""Host time of the asynchronous decode loop, per process (loaded by sitecustomize.py when
HOST_PROBE_DIR is set): is a tensor-parallel batch-1 step bound by the device or by the hosts?

Wraps, once their modules are imported:
- rank side: ``Worker.launch_model`` (whole call), ``ModelRunner.launch`` (enqueueing a step),
  ``PendingOutput.result`` (waiting for the previous step's tokens: ~0 means the device was idle);
- driver side: ``LLMEngine.step`` (whole call), ``ChannelExecutor.launch_model`` (broadcast and wait
  for rank 0's reply), ``LLMEngine._process`` (outputs), ``Scheduler.schedule``.
Every 64 calls of a name (and at exit), the process appends the durations (us) since to
HOST_PROBE_DIR/<pid>.jsonl; ``summarize`` prints medians of each name's later records.
"""
import importlib.abc
import importlib.util
import json
import os
import sys
import time
from collections import defaultdict

_DIR = os.environ.get("HOST_PROBE_DIR", "")
TARGETS = {
    "pagedawq.engine.worker": [("Worker", "launch_model")],
    "pagedawq.engine.model_runner": [("ModelRunner", "launch"), ("PendingOutput", "result")],
    "pagedawq.engine.llm_engine": [("LLMEngine", "step"), ("LLMEngine", "_process")],
    "pagedawq.engine.executor.channel_executor": [("ChannelExecutor", "launch_model")],
    "pagedawq.engine.scheduler": [("Scheduler", "schedule")],
}
_samples = defaultdict(list)


def _flush(name):
    s = _samples[name]
    if s:
        with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps({"name": name, "us": s}) + "\n")
        s.clear()


def _record(name, us):
    _samples[name].append(us)
    if len(_samples[name]) == 64:
        _flush(name)


def _wrap(cls, method):
    fn = getattr(cls, method)
    name = f"{cls.__name__}.{method}"

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(name, 1e6 * (time.perf_counter() - t))
    setattr(cls, method, timed)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            for cls, method in TARGETS[fullname]:
                _wrap(getattr(module, cls), method)
        loader.exec_module = patched
        return spec


def install():
    import atexit
    os.makedirs(_DIR, exist_ok=True)
    sys.meta_path.insert(0, _Finder())
    atexit.register(lambda: [_flush(name) for name in list(_samples)])


def summarize(directory, skip=1):
    """Median and mean of each name's records past the first ``skip`` (warm-up) per process."""
    import statistics
    for fname in sorted(os.listdir(directory)):
        recs = defaultdict(list)
        for line in open(os.path.join(directory, fname)):
            r = json.loads(line)
            recs[r["name"]].append(r["us"])
        print(fname)
        for name, blocks in sorted(recs.items()):
            vals = [v for b in blocks[skip:] for v in b] or [v for b in blocks for v in b]
            print(f"  {name:32s} n={len(vals):5d} median {statistics.median(vals):8.1f} us  "
                  f"mean {statistics.fmean(vals):8.1f}")


if __name__ == "__main__":
    summarize(sys.argv[1])
