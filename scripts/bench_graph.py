"""Time and measure memory of one sparse graph `metric` attention block, forward+backward;
and the graph kernels against PyTorch Geometric (`--vs-pyg`).

  python scripts/bench_graph.py [--rows 250 --cols 400] [--heads 4] [--self-loops] [--ipn]
      [--implementation auto|ell|segment|before]
  python scripts/bench_graph.py --vs-pyg /work/pygvenv/bin/python [--sizes 10000,100000]
      [--graphs torus,delaunay,knn] [--rounds 2] [--logits l2] [--forms]

The graph is a triangulated torus grid (rows x cols vertices, each with 6 neighbours, edges
in both directions: 6 N directed edges; 100,000 nodes and 600,000 edges by default). The
block, on x [N, width] with plain jnp weights:

  u = x P + p;  g(u) = u + W2 tanh(W1 u + b1) + b2;  q = k = split_heads(g(u))
  v = split_heads(x Wv)        (--ipn: v = x for every head, as the paper's IPN)
  out = graph_attention(q, k, v, distance=True), heads merged (--ipn: averaged)

The time is the median over --reps of jax.grad of a scalar loss w.r.t. all weights, after
compilation. Peak memory is this process's maximum RSS (the issue's target: under 2 GB) and
XLA's own estimate (`compiled.memory_analysis()`). `--implementation` is graph_attention's
(auto: the form `graph_layout` chooses, built on the host; before: the edge kernel as it was
before the neighbour-list and sorted-segment forms, kept here to compare against).

--vs-pyg PYTHON: the kernel alone (one head, width 64, q, k, v given; logits l2 or dot),
forward and forward+backward (of mean(out^2) w.r.t. q, k, v), ours against
scripts/pyg_graph_bench.py run by PYTHON (a separate virtual environment with torch and
torch_geometric), on the same graph and arrays (written to a temporary .npz): a torus grid
mesh (6 neighbours and self), a Delaunay triangulation of random points (an irregular mesh,
degree 4-14) and a k-NN graph of random 3-D points (k=8 and self), at each of --sizes nodes.
Each (graph, size) runs --rounds rounds; a round runs ours (the chosen form, and the kernel
before) and PyG's (torch's default threads, the cores, and 1 thread: on a shared, loaded
machine torch's OpenMP threads wait much longer with 2 than with 1), each in its own
subprocess, alternating which goes first; every subprocess reports its median time over
--reps and its peak RSS. Prints one JSON line per subprocess, then a table with the ratio
PyG time (the faster of its two thread counts) / our time (> 1: ours faster) per round,
and the largest difference between the two outputs. --forms also runs both of our forms
(neighbour lists and sorted segments, whichever `auto` chose) and prints their
forward+backward side by side: what `choose_implementation`'s threshold rests on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention import graph as graph_lib
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


def attention_before(q, k, v, receivers, senders, *, distance=False, scale=None):
  """The edge kernel before the neighbour-list and sorted-segment forms (commit 0359ad6):
  unsorted segment reductions, one logit per listed edge (duplicates counted)."""
  nodes = q.shape[0]
  s = scale or q.shape[-1] ** -0.5
  qe, ke = q.astype(jnp.float32)[receivers], k.astype(jnp.float32)[senders]
  logits = (-s * jnp.sum((qe - ke) ** 2, axis=-1) if distance
            else s * jnp.sum(qe * ke, axis=-1))
  row_max = jax.ops.segment_max(logits, receivers, num_segments=nodes)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  weights = jnp.exp(logits - row_max[receivers])
  denom = jax.ops.segment_sum(weights, receivers, num_segments=nodes)
  out = jax.ops.segment_sum(weights[..., None] * v.astype(jnp.float32)[senders], receivers,
                            num_segments=nodes)
  return (out / jnp.where(denom > 0, denom, 1.0)[..., None]).astype(v.dtype)


def layout(receivers, senders, n: int, implementation: str):
  """(kernel kwargs, receivers, senders) of an implementation name (host-built forms)."""
  if implementation == "before":
    return {"before": True}, receivers, senders
  impl, r, s = graph_lib.graph_layout(receivers, senders, n,
                                      None if implementation == "auto" else implementation)
  return {"implementation": impl, "presorted": r.ndim == 1}, r, s


def attend(q, k, v, receivers, senders, distance, kw):
  if kw.get("before"):
    return attention_before(q, k, v, receivers, senders, distance=distance)
  return graph_attention(q, k, v, receivers, senders, distance=distance, **kw)


def block(w, x, receivers, senders, heads: int, ipn: bool, kw=None):
  """x [N, width] -> [N, width]."""
  u = x @ w["P"] + w["p"]
  qk = u + jnp.tanh(u @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]
  qk = qk.reshape(x.shape[0], heads, -1)
  if ipn:
    v = jnp.broadcast_to(x[:, None, :], (x.shape[0], heads, x.shape[1]))
  else:
    v = (x @ w["Wv"]).reshape(x.shape[0], heads, -1)
  out = attend(qk, qk, v, receivers, senders, True, kw or {})
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
  p.add_argument("--implementation", default="auto",
                 choices=("auto", "ell", "segment", "before"))
  p.add_argument("--vs-pyg", metavar="PYTHON", default=None,
                 help="compare the kernel with PyTorch Geometric's, run by this Python")
  p.add_argument("--sizes", default="10000,100000")
  p.add_argument("--graphs", default="torus,delaunay,knn")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--logits", choices=("l2", "dot"), default="l2")
  p.add_argument("--forms", action="store_true",
                 help="--vs-pyg: also time both forms, ell and segment, on every graph")
  p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a subprocess of --vs-pyg
  a = p.parse_args()
  if a.one:
    return kernel_once(a)
  if a.vs_pyg:
    return vs_pyg(a)

  receivers, senders = torus_mesh(a.rows, a.cols, a.self_loops)
  n, edges = a.rows * a.cols, len(receivers)
  kw, receivers, senders = layout(receivers, senders, n, a.implementation)
  w = init_weights(a.width, a.width)
  x = jax.random.normal(jax.random.key(1), (n, a.width))
  receivers, senders = jnp.asarray(receivers), jnp.asarray(senders)

  def loss(w, x, receivers, senders):
    return jnp.mean(block(w, x, receivers, senders, a.heads, a.ipn, kw) ** 2)

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
  print(f"graph metric block ({a.implementation}: {kw}): N={n} edges={edges} width={a.width} "
        f"heads={a.heads}{' ipn' if a.ipn else ''}: fwd+bwd {statistics.median(times) * 1e3:.0f} ms (median of "
        f"{a.reps}), peak RSS {rss_mb:.0f} MB, XLA {xla}, load {load}, "
        f"cpu/wall {cpu_per_wall:.2f}")


# ---------------------------------------------------------------- against PyTorch Geometric

def make_graph(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Distinct edges (receivers, senders) of a graph of about n nodes, with self-loops."""
  rng = np.random.default_rng(seed)
  if kind == "torus":
    rows = int(np.sqrt(n / 1.6))
    return graph_lib.sort_edges(*torus_mesh(rows, n // rows, True), rows * (n // rows))
  if kind == "delaunay":
    from scipy.spatial import Delaunay
    tri = Delaunay(rng.random((n, 2))).simplices
    e = tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    r = np.concatenate([e[:, 0], e[:, 1], np.arange(n)])
    s = np.concatenate([e[:, 1], e[:, 0], np.arange(n)])
    return graph_lib.sort_edges(r, s, n)
  if kind == "knn":
    from scipy.spatial import cKDTree
    pts = rng.random((n, 3))
    _, nbr = cKDTree(pts).query(pts, k=9)  # itself and its 8 nearest
    return graph_lib.sort_edges(np.repeat(np.arange(n), 9), nbr.ravel(), n)
  raise SystemExit(f"unknown graph {kind!r}")


def timed(fn, args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def kernel_once(a) -> None:
  """One subprocess of --vs-pyg: our kernel on the graph file a.one, JSON on stdout."""
  d = np.load(a.one)
  n = d["q"].shape[0]
  kw, r, s = layout(d["receivers"], d["senders"], n, a.implementation)
  q, k, v = (jnp.asarray(d[name])[:, None, :] for name in ("q", "k", "v"))  # one head
  r, s = jnp.asarray(r), jnp.asarray(s)
  distance = a.logits == "l2"
  fwd = jax.jit(lambda q, k, v, r, s: attend(q, k, v, r, s, distance, kw))
  loss = lambda q, k, v, r, s: jnp.mean(attend(q, k, v, r, s, distance, kw) ** 2)
  fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  t_fwd = timed(fwd, (q, k, v, r, s), a.reps)
  t_fwd_bwd = timed(fwd_bwd, (q, k, v, r, s), a.reps)
  out = np.asarray(fwd(q, k, v, r, s))[:, 0]
  np.save(a.one + f".{a.implementation}.npy", out)
  print(json.dumps({"side": f"ours:{a.implementation}", "form": kw.get("implementation",
                                                                       "before"),
                    "forward_s": t_fwd, "forward_backward_s": t_fwd_bwd,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "checksum": float(np.abs(out).sum()), "jax": jax.__version__}))


def vs_pyg(a) -> None:
  peer = Path(__file__).with_name("pyg_graph_bench.py")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for kind in a.graphs.split(","):
      for n in map(int, a.sizes.split(",")):
        r, s = make_graph(kind, n)
        n = int(max(r.max(), s.max())) + 1
        rng = np.random.default_rng(1)
        q, k, v = (rng.standard_normal((n, a.width), np.float32) for _ in range(3))
        path = os.path.join(tmp, f"{kind}-{n}.npz")
        np.savez(path, receivers=r, senders=s, q=q, k=k, v=v)
        deg = np.bincount(r, minlength=n)
        for rnd in range(a.rounds):
          ours = [sys.executable, __file__, "--one", path, "--reps", str(a.reps),
                  "--logits", a.logits]
          pyg = [a.vs_pyg, str(peer), path, "--reps", str(a.reps), "--logits", a.logits,
                 "--save-out", path + ".pyg.npy"]
          cmds = {"pyg": pyg, "pyg1": pyg + ["--threads", "1"]}
          for impl in ("auto", "before") + (("ell", "segment") if a.forms else ()):
            cmds[impl] = ours + ["--implementation", impl]
          order = list(cmds) if rnd % 2 else list(cmds)[::-1]
          res = {}
          for side in order:
            out = subprocess.run(cmds[side], capture_output=True, text=True, check=True)
            res[side] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"graph": kind, "nodes": n, "edges": len(r), "round": rnd,
                              "load": os.getloadavg()[0], **res[side]}), flush=True)
          diff = float(np.abs(np.load(path + ".pyg.npy") - np.load(path + ".auto.npy")).max())
          rows.append((kind, n, len(r), int(deg.max()), float(deg.mean()), rnd, res, diff,
                       os.getloadavg()[0]))
  print("\n| graph | nodes | edges | max / mean degree | round | our form | PyG fwd ms | ours "
        "fwd ms | PyG/ours fwd | PyG fwd+bwd ms | ours fwd+bwd ms | PyG/ours fwd+bwd | "
        "before fwd+bwd ms | before/ours fwd+bwd | peak RSS MB PyG / ours | max abs diff | "
        "load |")
  print("|" + "---|" * 17)
  for kind, n, e, dmax, dmean, rnd, res, diff, load in rows:
    o, b = res["auto"], res["before"]
    p = {key: min(res["pyg"][key], res["pyg1"][key])
         for key in ("forward_s", "forward_backward_s")}  # PyG's better thread count
    p["peak_rss_mb"] = max(res["pyg"]["peak_rss_mb"], res["pyg1"]["peak_rss_mb"])
    print(f"| {kind} | {n:,} | {e:,} | {dmax} / {dmean:.1f} | {rnd} | {o['form']} | "
          f"{p['forward_s'] * 1e3:.1f} | {o['forward_s'] * 1e3:.1f} | "
          f"{p['forward_s'] / o['forward_s']:.2f} | {p['forward_backward_s'] * 1e3:.1f} | "
          f"{o['forward_backward_s'] * 1e3:.1f} | "
          f"{p['forward_backward_s'] / o['forward_backward_s']:.2f} | "
          f"{b['forward_backward_s'] * 1e3:.1f} | "
          f"{b['forward_backward_s'] / o['forward_backward_s']:.2f} | "
          f"{p['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} | {diff:.1e} | {load:.1f} |")
  if a.forms:
    print("\n| graph | nodes | max / mean degree | round | ell fwd+bwd ms | segment fwd+bwd ms "
          "| segment / ell |")
    print("|" + "---|" * 7)
    for kind, n, e, dmax, dmean, rnd, res, diff, load in rows:
      ell, seg = (res[f]["forward_backward_s"] for f in ("ell", "segment"))
      print(f"| {kind} | {n:,} | {dmax} / {dmean:.1f} | {rnd} | {ell * 1e3:.1f} | "
            f"{seg * 1e3:.1f} | {seg / ell:.2f} |")


if __name__ == "__main__":
  main()
