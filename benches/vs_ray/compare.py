#!/usr/bin/env python3
"""Joins `ray microbenchmark` output and `prism microbenchmark --json` by
workload name into one markdown table: metric, Ray, Prism, Prism/Ray."""
import json
import re
import sys


def ray_rows(path):
    rows = {}
    pat = re.compile(r"^(.*?) per second ([0-9.]+) \+- ([0-9.]+)")
    for line in open(path, encoding="utf-8", errors="replace"):
        m = pat.search(line.strip())
        if m:
            rows[m.group(1).strip()] = (float(m.group(2)), float(m.group(3)))
    return rows


def main():
    ray = ray_rows(sys.argv[1])
    prism = {r["name"]: r for r in json.load(open(sys.argv[2]))}
    print("| metric | Ray | Prism | Prism / Ray |")
    print("|---|---|---|---|")
    for name, r in prism.items():
        if r["unit"] != "per second":
            continue
        p = f"{r['mean']:,.2f} ± {r['std']:,.2f}"
        if name in ray:
            mean, sd = ray[name]
            ratio = r["mean"] / mean if mean else float("nan")
            print(f"| {name} | {mean:,.2f} ± {sd:,.2f} | {p} | {ratio:.1f}× |")
        else:
            print(f"| {name} | — | {p} | — |")
    for name, (mean, sd) in ray.items():
        if name not in prism:
            print(f"| {name} | {mean:,.2f} ± {sd:,.2f} | not run | — |")
    extras = [r for r in prism.values() if r["unit"] != "per second"]
    if extras:
        print()
        print("| Prism extra | value |")
        print("|---|---|")
        for r in extras:
            print(f"| {r['name']} | {r['mean']:,.1f} {r['unit']} |")


if __name__ == "__main__":
    main()
