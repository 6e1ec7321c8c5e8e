# Stack dumps of every Python process every HANG_DUMP_S seconds (hang bisection on the GPU host).
import faulthandler
import importlib
import os
import sys as _sys
_d = os.environ.get("HANG_DUMP_DIR")
if _d:
    os.makedirs(_d, exist_ok=True)
    _f = open(os.path.join(_d, f"{os.getpid()}.txt"), "w")
    faulthandler.dump_traceback_later(int(os.environ.get("HANG_DUMP_S", "40")), repeat=True, file=_f)
# Host time of the decode loop per process (host_probe.py); where each process's tensors live
# (device_probe.py): each installed when its directory variable is set.
_here = os.path.dirname(os.path.abspath(__file__))
for _var, _module in (("HOST_PROBE_DIR", "host_probe"), ("DEVICE_PROBE_DIR", "device_probe")):
    if os.environ.get(_var):
        if _here not in _sys.path:
            _sys.path.insert(0, _here)
        importlib.import_module(_module).install()
