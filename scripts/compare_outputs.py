#!/usr/bin/env python3
"""Runs two colstats binaries on the same inputs and reports every output that differs.

For a change meant to keep behaviour (a restructuring), every output must be byte-identical:

    python3 scripts/compare_outputs.py OLD_BINARY NEW_BINARY [--out DIR]

Inputs: every .npy fixture (good and bad), every HDF5/netCDF fixture case of
tests/fixtures/h5/manifest.json, and a few generated files, each with several option sets
(json/csv/table/npz, --threads 1 and 2, small budgets, --columns, --rows, --nan, --ddof,
`info`). stdout, stderr and the exit status are compared (npz as bytes of the file). Only
the Python standard library is needed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"

OPTION_SETS = [
    ["stats", "--format", "json"],
    ["stats", "--format", "csv", "--threads", "1"],
    ["stats", "--format", "table", "--memory", "1MiB", "--threads", "2"],
    ["stats", "--format", "json", "--stats", "mean,var", "--ddof", "1", "--nan", "propagate"],
    ["stats", "--format", "json", "--columns", "::2", "--rows", "1:-1"],
    ["stats", "--format", "json", "--rows", ":-3", "--threads", "1"],
    ["info"],
]


def cases():
    for p in sorted((FIX / "npy").glob("*.npy")) + sorted((FIX / "npy_bad").glob("*")):
        yield [str(p)]
    manifest = json.loads((FIX / "h5" / "manifest.json").read_text())
    for c in manifest:
        args = [str(FIX / "h5" / c["file"])]
        if c["dataset"] is not None:
            args += ["--dataset", c["dataset"]]
        yield args


def run(binary, args):
    out = subprocess.run([binary, *args], capture_output=True, timeout=120,
                         env={**os.environ, "NO_COLOR": "1"})
    return out.returncode, out.stdout, out.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    a = ap.parse_args()
    n = 0
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for base in cases():
            for opts in OPTION_SETS:
                args = [opts[0], *base, *opts[1:]]
                o = run(a.old, args)
                w = run(a.new, args)
                n += 1
                if o != w:
                    diffs.append((args, o, w))
            # npz: compare the archive bytes.
            npz = []
            for b in (a.old, a.new):
                p = Path(tmp) / f"out_{len(npz)}.npz"
                rc = subprocess.run([b, "stats", *base, "--format", "npz", "-o", str(p)],
                                    capture_output=True).returncode
                npz.append((rc, p.read_bytes() if p.exists() else b""))
                if p.exists():
                    p.unlink()
            n += 1
            if npz[0] != npz[1]:
                diffs.append(([*base, "npz"], npz[0][0], npz[1][0]))
    for args, o, w in diffs[:40]:
        print("DIFF:", " ".join(args))
        if isinstance(o, tuple):
            print("  old:", o[0], o[1][:300], o[2][:300])
            print("  new:", w[0], w[1][:300], w[2][:300])
    print(f"{n} outputs compared, {len(diffs)} differ")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
