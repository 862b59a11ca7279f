"""The PyTorch Geometric peer of scripts/bench_graph.py --vs-pyg: one attention head over a
graph's edges with `torch_geometric.utils.softmax` and `scatter`, forward and
forward+backward, on CPU. Imports nothing from metricattn; run it with the Python of a
separate virtual environment holding torch and torch_geometric (never a dependency of this
project):

  python3 -m venv /work/pygvenv && /work/pygvenv/bin/pip install torch torch_geometric
  /work/pygvenv/bin/python scripts/pyg_graph_bench.py GRAPH.npz [--reps 5] [--logits l2]

GRAPH.npz (written by bench_graph.py) holds receivers, senders int32 [edges] (distinct
edges) and q, k, v float32 [nodes, width]. Edge e lets node receivers[e] attend to
senders[e]; logits l2: -scale ||q_r - k_s||^2, dot: scale q_r . k_s, scale 1/sqrt(width).
Prints one JSON line: median seconds of each, peak resident memory, the output's checksum
and, with --save-out, writes the forward output for the caller to compare.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
import torch_geometric
from torch_geometric.utils import scatter, softmax


def attend(q, k, v, receivers, senders, num_nodes: int, logits: str):
  scale = q.shape[-1] ** -0.5
  qe, ke = q.index_select(0, receivers), k.index_select(0, senders)
  if logits == "l2":
    a = -scale * ((qe - ke) ** 2).sum(-1)
  else:
    a = scale * (qe * ke).sum(-1)
  alpha = softmax(a, receivers, num_nodes=num_nodes)
  return scatter(alpha.unsqueeze(-1) * v.index_select(0, senders), receivers, dim=0,
                 dim_size=num_nodes, reduce="sum")


def median_time(fn, reps: int) -> float:
  fn()  # warm-up
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("graph")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--logits", choices=("l2", "dot"), default="l2")
  p.add_argument("--save-out", default=None, help="write the forward output here (.npy)")
  p.add_argument("--threads", type=int, default=None,
                 help="torch.set_num_threads (default: torch's, the cores)")
  a = p.parse_args()
  if a.threads:
    torch.set_num_threads(a.threads)
  d = np.load(a.graph)
  receivers = torch.from_numpy(d["receivers"].astype(np.int64))
  senders = torch.from_numpy(d["senders"].astype(np.int64))
  q, k, v = (torch.from_numpy(d[n]) for n in ("q", "k", "v"))
  n = q.shape[0]

  def forward():
    with torch.no_grad():
      return attend(q, k, v, receivers, senders, n, a.logits)

  qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

  def forward_backward():
    for t in (qg, kg, vg):
      t.grad = None
    out = attend(qg, kg, vg, receivers, senders, n, a.logits)
    (out ** 2).mean().backward()

  fwd = median_time(forward, a.reps)
  fwd_bwd = median_time(forward_backward, a.reps)
  out = forward().numpy()
  if a.save_out:
    np.save(a.save_out, out)
  print(json.dumps({"side": "pyg", "forward_s": fwd, "forward_backward_s": fwd_bwd,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "checksum": float(np.abs(out).sum()), "torch": torch.__version__,
                    "torch_geometric": torch_geometric.__version__,
                    "threads": torch.get_num_threads()}))


if __name__ == "__main__":
  main()
