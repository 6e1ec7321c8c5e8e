"""The SASS instructions with the most warp-state samples, from ``ncu --page source --csv
--print-source sass`` (``benchmarks/gpu/gemm_stalls_h100.sh``), with each one's leading stall columns.

    python benchmarks/stall_table.py stalls.csv --top 25

The samples column is the first whose name holds "sampl" (preferring one with "all"); stall columns
are those whose name holds "stall" but not "sampl". Where the CSV has no samples column, its header is printed and
the script exits with status 1, so that a changed ncu format shows at once.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return 0.0


def read_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of ncu's CSV. Lines before the header are skipped: ncu's notes and, in
    ncu 2025's source page, a ``"Kernel Name","<name>",`` line. The header is the first quoted line
    naming an "Address" column, else the first quoted line."""
    lines = text.splitlines()
    quoted = [i for i, ln in enumerate(lines) if ln.startswith('"') and "," in ln]
    start = next((i for i in quoted if lines[i].startswith('"Address"')), quoted[0] if quoted else 0)
    reader = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    return list(reader.fieldnames or []), list(reader)


def samples_column(header: list[str]) -> str | None:
    found = [c for c in header if "sampl" in c.lower()]
    return next((c for c in found if "all" in c.lower()), found[0] if found else None)


def top_rows(header: list[str], table: list[dict[str, str]], top: int) -> list[str]:
    """One line per instruction, most samples first: share of all samples, address, SASS, the three
    largest stall columns."""
    col = samples_column(header)
    stalls = [c for c in header if "stall" in c.lower() and "sampl" not in c.lower() and "not issued" not in c.lower()]
    total = sum(number(r[col]) for r in table) or 1.0
    out = []
    for r in sorted(table, key=lambda r: -number(r[col]))[:top]:
        lead = sorted(((c, number(r[c])) for c in stalls), key=lambda t: -t[1])[:3]
        why = ", ".join(f"{c} {v:.0f}" for c, v in lead if v > 0)
        out.append(f"{100 * number(r[col]) / total:5.1f}%  {r.get('Address', '')}  {r.get('Source', '')[:60]:<60}  {why}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    with open(args.csv) as f:
        header, table = read_table(f.read())
    if samples_column(header) is None:
        print("no samples column; header: " + " | ".join(header))
        sys.exit(1)
    print("\n".join(top_rows(header, table, args.top)))


if __name__ == "__main__":
    main()
