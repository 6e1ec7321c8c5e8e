#!/usr/bin/env bash
# Session 30, call 4 (asked for nvidia-h100-x2; ran on 2xH200; carry .raycarry and .abmain = bbb33ef):
# main (c924dd4, decode graphs per context bucket) against the tree before it, one round at TP=1 and
# TP=2 on one machine.
TESTS= RUNS=1 SIZES="1 2" bash benchmarks/gpu/ab_tp_x2.sh
