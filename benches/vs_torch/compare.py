#!/usr/bin/env python3
"""Joins torch_bench.py --json and ml_bench --json (same row names) into one
markdown table: metric, PyTorch, Prism, ratio.

    compare.py out/torch.json [out/prism.json]

Ratio is oriented so that > 1 means Prism is better: Prism / PyTorch for
bandwidth rows (GB/s), PyTorch / Prism for rows where less is better (ms,
a pipeline's bubble-and-overhead fraction, MB). Two more rows give
each side's DDP scaling: single-process step at the global batch divided by
the DDP step (2 workers, so the ideal is 2.00×; the percentage is that over 2).
"""
import json
import sys

SCALING = [  # (label, single-process row, DDP row, workers)
    ("small mlp", "single step small mlp 128", "ddp step small mlp 2x64", 2),
    ("large mlp", "single step large mlp 64", "ddp step large mlp 2x32", 2),
]


def load(path):
    if not path:
        return {}
    rows = {}
    for r in json.load(open(path, encoding="utf-8")):
        v = r.get("value", r.get("mean"))
        if v is not None:
            rows[r["name"]] = (float(v), r.get("unit", ""))
    return rows


def fmt(v, unit):
    return f"{v:,.3f} {unit}" if unit == "GB/s" else f"{v:,.2f} {unit}"


def ratio(t, p, unit):
    if unit in ("ms", "fraction", "MB"):
        return t / p if p else float("nan")
    return p / t if t else float("nan")


def main():
    torch = load(sys.argv[1] if len(sys.argv) > 1 else None)
    prism = load(sys.argv[2] if len(sys.argv) > 2 else None)
    print("| metric | PyTorch 2.13 | Prism | ratio (>1: Prism better) |")
    print("|---|---|---|---|")
    names = list(torch) + [n for n in prism if n not in torch]
    for name in names:
        t, p = torch.get(name), prism.get(name)
        unit = (t or p)[1]
        ts = fmt(t[0], unit) if t else "not run"
        ps = fmt(p[0], unit) if p else "not run"
        if t and p and p[1] != t[1]:
            r = f"unit mismatch ({p[1]})"
        elif t and p:
            r = f"{ratio(t[0], p[0], unit):.2f}×"
        else:
            r = "—"
        print(f"| {name} | {ts} | {ps} | {r} |")

    def scaling(rows, single, ddp, n):
        if single in rows and ddp in rows and rows[ddp][0]:
            s = rows[single][0] / rows[ddp][0]
            return s, f"{s:.2f}× ({100 * s / n:.0f}%)"
        return None, "not run"

    for label, single, ddp, n in SCALING:
        ts, tstr = scaling(torch, single, ddp, n)
        ps, pstr = scaling(prism, single, ddp, n)
        r = f"{ps / ts:.2f}×" if ts and ps else "—"
        print(f"| ddp scaling {label} (single / ddp, ideal {n}.00×) | {tstr} | {pstr} | {r} |")


if __name__ == "__main__":
    main()
