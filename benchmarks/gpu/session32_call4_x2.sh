#!/usr/bin/env bash
# Session 32, call 4 (nvidia-h200-x2, needs_h200): does a CUDA graph start its kernels more slowly on
# cuda:1 than on cuda:0, with or without the other GPU visible, with peer access on? (graph_gap_probe.py,
# every case; ~80 s)
source benchmarks/gpu/env.sh >/dev/null
python benchmarks/experiments/graph_gap_probe.py
