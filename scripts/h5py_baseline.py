#!/usr/bin/env python3
"""Baseline: per-column count/sum/sumsq/min/max of an HDF5 dataset with h5py and numpy,
in 64 MiB slabs. Usage: h5py_baseline.py FILE DATASET (needs numpy and h5py)."""
import sys, time, numpy as np, h5py
path, ds = sys.argv[1], sys.argv[2]
t = time.time()
with h5py.File(path, 'r') as f:
    d = f[ds]; n = d.shape[0]; step = max(1, (64 << 20) // (d.dtype.itemsize * int(np.prod(d.shape[1:]))))
    s = s2 = 0; mn = mx = None; cnt = 0
    for r in range(0, n, step):
        a = d[r:r+step]
        s = s + np.nansum(a, axis=0); s2 = s2 + np.nansum(a*a, axis=0); cnt = cnt + np.sum(~np.isnan(a), axis=0)
        m1, m2 = np.nanmin(a, axis=0), np.nanmax(a, axis=0)
        mn = m1 if mn is None else np.minimum(mn, m1); mx = m2 if mx is None else np.maximum(mx, m2)
el = time.time() - t
import os
print(f"h5py+numpy {ds}: {el:.2f} s, {d.size*d.dtype.itemsize/el/1e9:.2f} GB/s logical")
