"""pagedawq: a vLLM-style inference engine with AWQ int4 kernels."""
