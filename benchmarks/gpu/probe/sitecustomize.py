# Stack dumps of every Python process every HANG_DUMP_S seconds (hang bisection on the GPU host).
import faulthandler
import os
_d = os.environ.get("HANG_DUMP_DIR")
if _d:
    os.makedirs(_d, exist_ok=True)
    _f = open(os.path.join(_d, f"{os.getpid()}.txt"), "w")
    faulthandler.dump_traceback_later(int(os.environ.get("HANG_DUMP_S", "40")), repeat=True, file=_f)
# Host time of the decode loop per process (host_probe.py).
if os.environ.get("HOST_PROBE_DIR"):
    import sys as _sys
    _sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import host_probe
    host_probe.install()
# Where each process's tensors live (device_probe.py).
if os.environ.get("DEVICE_PROBE_DIR"):
    import sys as _sys
    _sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import device_probe
    device_probe.install()
