"""Time and measure memory of one sparse graph `metric` attention block, forward+backward.

  python scripts/bench_graph.py [--rows 250 --cols 400] [--heads 4] [--self-loops] [--ipn]

The graph is a triangulated torus grid (rows x cols vertices, each with 6 neighbours, edges
in both directions: 6 N directed edges; 100,000 nodes and 600,000 edges by default). The
block, on x [N, width] with plain jnp weights:

  u = x P + p;  g(u) = u + W2 tanh(W1 u + b1) + b2;  q = k = split_heads(g(u))
  v = split_heads(x Wv)        (--ipn: v = x for every head, as the paper's IPN)
  out = graph_attention(q, k, v, distance=True), heads merged (--ipn: averaged)

The time is the median over --reps of jax.grad of a scalar loss w.r.t. all weights, after
compilation. Peak memory is this process's maximum RSS (the issue's target: under 2 GB) and
XLA's own estimate (`compiled.memory_analysis()`).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention import graph_attention


def torus_mesh(rows: int, cols: int, self_loops: bool) -> tuple[np.ndarray, np.ndarray]:
  """int32 (receivers, senders) of a triangulated torus grid, sorted by receiver."""
  i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  node = (i * cols + j).ravel()
  nbrs = [((i + di) % rows * cols + (j + dj) % cols).ravel()
          for di, dj in ((0, 1), (1, 0), (1, 1), (0, -1), (-1, 0), (-1, -1))]
  receivers = np.concatenate([node] * (len(nbrs) + self_loops))
  senders = np.concatenate(nbrs + [node] * self_loops)
  order = np.argsort(receivers, kind="stable")
  return receivers[order].astype(np.int32), senders[order].astype(np.int32)


def init_weights(width: int, hidden: int, seed: int = 0) -> dict[str, jax.Array]:
  ks = jax.random.split(jax.random.key(seed), 4)
  dense = lambda k, m, n: jax.random.normal(k, (m, n)) / np.sqrt(m)
  return {"P": dense(ks[0], width, width), "p": jnp.zeros(width),
          "W1": dense(ks[1], width, hidden), "b1": jnp.zeros(hidden),
          "W2": dense(ks[2], hidden, width), "b2": jnp.zeros(width),
          "Wv": dense(ks[3], width, width)}


def block(w, x, receivers, senders, heads: int, ipn: bool):
  """x [N, width] -> [N, width]."""
  u = x @ w["P"] + w["p"]
  qk = u + jnp.tanh(u @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]
  qk = qk.reshape(x.shape[0], heads, -1)
  if ipn:
    v = jnp.broadcast_to(x[:, None, :], (x.shape[0], heads, x.shape[1]))
  else:
    v = (x @ w["Wv"]).reshape(x.shape[0], heads, -1)
  out = graph_attention(qk, qk, v, receivers, senders, distance=True)
  return out.mean(axis=1) if ipn else out.reshape(x.shape)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", type=int, default=250)
  p.add_argument("--cols", type=int, default=400)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--self-loops", action="store_true")
  p.add_argument("--ipn", action="store_true", help="v = x, no value projection")
  p.add_argument("--reps", type=int, default=5)
  a = p.parse_args()

  receivers, senders = torus_mesh(a.rows, a.cols, a.self_loops)
  n, edges = a.rows * a.cols, len(receivers)
  w = init_weights(a.width, a.width)
  x = jax.random.normal(jax.random.key(1), (n, a.width))
  receivers, senders = jnp.asarray(receivers), jnp.asarray(senders)

  def loss(w, x, receivers, senders):
    return jnp.mean(block(w, x, receivers, senders, a.heads, a.ipn) ** 2)

  step = jax.jit(jax.value_and_grad(loss))
  args = (w, x, receivers, senders)
  compiled = step.lower(*args).compile()
  mem = compiled.memory_analysis()
  jax.block_until_ready(compiled(*args))  # warm up

  times = []
  cpu0, wall0 = os.times(), time.perf_counter()
  for _ in range(a.reps):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t)
  cpu1, wall1 = os.times(), time.perf_counter()
  cpu_per_wall = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (wall1 - wall0)

  rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
  mb = lambda b: f"{b / 2**20:.0f} MB"
  xla = ("n/a" if mem is None else f"temp {mb(mem.temp_size_in_bytes)}, args "
         f"{mb(mem.argument_size_in_bytes)}, out {mb(mem.output_size_in_bytes)}")
  load = " ".join(f"{l:.2f}" for l in os.getloadavg())
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
  print(f"graph metric block: N={n} edges={edges} width={a.width} heads={a.heads}"
        f"{' ipn' if a.ipn else ''}: fwd+bwd {statistics.median(times) * 1e3:.0f} ms (median of "
        f"{a.reps}), peak RSS {rss_mb:.0f} MB, XLA {xla}, load {load}, "
        f"cpu/wall {cpu_per_wall:.2f}")


if __name__ == "__main__":
  main()
