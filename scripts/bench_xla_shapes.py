"""Two XLA:CPU costs behind the graph kernels' layout (docs/graph.md, "Speed"), each measured
side by side in this one process, median of --reps after compilation:

  1. A last-axis reduction over [n, 1, d] (one attention head kept as an axis) against the
     same data as [n, d]; and an elementwise loop over both, for contrast (it measured the
     same either way).
  2. Gathering rows of a [n, d] table by each of the `slots` columns of a neighbour list
     [n, slots] (with -1 padding clamped to 0): unrolled in one program, where XLA fuses the
     index arithmetic into every gathered element, against a `lax.scan` over the slots,
     whose body gets each slot's indices as a buffer. Each gathered block is used twice
     (a dot with q and a weighted sum), as in the kernel's backward pass.

  python scripts/bench_xla_shapes.py [--n 100000] [--d 64] [--slots 7] [--reps 15]

Prints one line per measurement and the ratio slow / fast (> 1: the layout the kernels use
is faster), with the load average and the process's CPU seconds per wall second.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_graph import timed  # this script's folder is on sys.path when it runs


def gather_unrolled(t, nbr, q):
  idx = jnp.where(nbr >= 0, nbr, 0)
  out, dots = jnp.zeros_like(q), []
  for j in range(nbr.shape[1]):
    rows = t.at[idx[:, j]].get(mode="promise_in_bounds")
    dots.append(jnp.sum(rows * q, axis=-1))
    out = out + 0.5 * rows
  return out, jnp.stack(dots)


def gather_scan(t, nbr, q):
  idx = jnp.where(nbr >= 0, nbr, 0).T

  def slot(out, i):
    rows = t.at[i].get(mode="promise_in_bounds")
    return out + 0.5 * rows, jnp.sum(rows * q, axis=-1)

  return jax.lax.scan(slot, jnp.zeros_like(q), idx)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--n", type=int, default=100_000)
  p.add_argument("--d", type=int, default=64)
  p.add_argument("--slots", type=int, default=7)
  p.add_argument("--reps", type=int, default=15)
  a = p.parse_args()
  rng = np.random.default_rng(0)
  x, y = (rng.standard_normal((a.n, a.d), np.float32) for _ in range(2))
  cpu0, wall0 = time.process_time(), time.perf_counter()
  results = []
  elementwise = jax.jit(lambda x, y: x - 2 * y)
  reduction = jax.jit(lambda x, y: jnp.sum(x * y, axis=-1))
  for name, fn in (("elementwise x - 2y", elementwise), ("reduction sum(x * y, -1)", reduction)):
    unit = timed(fn, (jnp.asarray(x[:, None]), jnp.asarray(y[:, None])), a.reps)
    flat = timed(fn, (jnp.asarray(x), jnp.asarray(y)), a.reps)
    results.append((f"{name}: [n, 1, d] / [n, d]", unit, flat))
  nbr = rng.integers(-1, a.n, (a.n, a.slots)).astype(np.int32)
  args = (jnp.asarray(x), jnp.asarray(nbr), jnp.asarray(y))
  unrolled = timed(jax.jit(gather_unrolled), args, a.reps)
  scanned = timed(jax.jit(gather_scan), args, a.reps)
  results.append((f"{a.slots} slot gathers, each used twice: unrolled / scan", unrolled,
                  scanned))
  cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
  print(f"n={a.n} d={a.d} slots={a.slots} jax {jax.__version__}, load "
        f"{os.getloadavg()[0]:.2f}, CPU seconds per wall second {cpu:.2f}")
  for name, slow, fast in results:
    print(f"{name}: {slow * 1e3:.2f} ms / {fast * 1e3:.2f} ms = {slow / fast:.1f}x")


if __name__ == "__main__":
  main()
