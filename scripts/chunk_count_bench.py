#!/usr/bin/env python3
"""Times colstats on netCDF-4 record variables of 10,000 to 1,000,000 chunks.

The netCDF library chunks a variable along an unlimited dimension one record a chunk, so a
long time series has as many chunks as records. For each size this writes such a variable
with the netCDF4 library, then times (best of 3, warm cache) `colstats info`, `colstats
stats`, and h5py + numpy reading the variable and taking its mean and variance; it checks
colstats's sums (exact for these integer-valued data) and means against numpy's. A last
case has 1,000,000 chunks never written (every value is the fill value).

    /work/venv/bin/python scripts/chunk_count_bench.py [--bin target/release/colstats]
        [--dir /tmp/cb] [--sizes 10000,100000,1000000]

Needs numpy, h5py and netCDF4; not part of the test suite.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import h5py
import netCDF4
import numpy as np


def best(f, n=3):
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = f()
        t.append(time.perf_counter() - t0)
    return min(t), out


def write(path, n, cols, written=True):
    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    ds.createDimension("time", None)
    ds.createDimension("x", cols)
    v = ds.createVariable("temp", "f8", ("time", "x"), fill_value=-1.0)
    if written:
        v[:] = np.arange(n * cols, dtype="f8").reshape(n, cols) % 1000
    else:
        v[n - 1] = np.full(cols, -1.0)  # extends the dimension, one chunk written
    ds.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/colstats")
    ap.add_argument("--dir", default="/tmp/cb")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--cols", type=int, default=4)
    a = ap.parse_args()
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    rows = ["| records = chunks | file | `colstats info` | `colstats stats` | h5py + numpy | check |",
            "|---|---|---|---|---|---|"]
    cases = [(int(n), True) for n in a.sizes.split(",")] + [(1_000_000, False)]
    for n, written in cases:
        p = d / f"rec{n}{'' if written else '_unwritten'}.nc"
        if not p.exists():
            write(p, n, a.cols, written)
        run = lambda *args: subprocess.run([a.bin, *args, str(p), "--dataset", "temp"],
                                           check=True, capture_output=True).stdout
        ti, _ = best(lambda: run("info"))
        ts, out = best(lambda: run("stats", "--format", "json"))

        def numpy_way():
            with h5py.File(p, "r") as f:
                x = f["temp"][()]
            return x, x.mean(0), x.var(0)

        th, (x, m, v) = best(numpy_way)
        s = json.loads(out)["stats"]
        ok = (s["sum"] == x.sum(0).tolist()
              and np.allclose(s["mean"], m, rtol=1e-15, atol=0)
              and np.allclose(s["var"], v, rtol=1e-9, atol=0))
        label = f"{n:,}" + ("" if written else " (never written)")
        rows.append(f"| {label} | {p.stat().st_size / 2**20:.1f} MiB | {ti:.3f} s | {ts:.3f} s "
                    f"| {th:.3f} s | {'ok' if ok else 'MISMATCH'} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
