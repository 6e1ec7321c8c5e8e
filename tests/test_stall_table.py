"""benchmarks/stall_table.py: ncu's per-instruction CSV ranked by warp-state samples."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import stall_table  # noqa: E402

CSV = '''==PROF== a note ncu prints first
"Kernel Name","awq_wgmma_t_kernel",
"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)","stall_long_sb","stall_wait"
"0x10","LDS.128 R8, [R4]","30","25","20","5"
"0x20","SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R9","1,200","1,100","1,000","40"
"0x30","HGMMA.64x8x16.F32 R24, R40, gdesc[UR20], RZ","70","60","0","60"
'''


def test_ranks_instructions_by_all_samples_with_their_leading_stalls():
    header, table = stall_table.read_table(CSV)
    assert stall_table.samples_column(header) == "Warp Stall Sampling (All Samples)"
    lines = stall_table.top_rows(header, table, 2)
    assert len(lines) == 2
    assert "TRYWAIT" in lines[0] and lines[0].lstrip().startswith("92.3%")
    assert lines[0].endswith("stall_long_sb 1000, stall_wait 40")
    assert "HGMMA" in lines[1] and "stall_wait 60" in lines[1]


def test_a_csv_without_samples_has_no_samples_column():
    header, _ = stall_table.read_table('"Address","Source"\n"0x10","NOP"\n')
    assert stall_table.samples_column(header) is None
