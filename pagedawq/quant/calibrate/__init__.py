"""AWQ offline calibration, one module per job.

``data`` turns text into calibration token blocks (``self_text`` lets the model write that text);
``walk`` knows the supported architectures, loads the model and runs one decoder layer at a time;
``scale_search`` and ``clip_search`` are AWQ's two searches; ``rtn`` quantizes a layer's linears
into checkpoint tensors; ``driver`` runs the per-layer loop; ``api`` is the public entry point.
"""
