"""On a GPU: forward+backward time and memory of the attention kernels per implementation
and length, with the l2/dot and metric/dot time ratios, in one table.

  python scripts/bench_gpu.py [--lengths 1024,2048,4096,8192,16384,32768,65536] [--reps 5]
  python scripts/bench_gpu.py --smoke      # tiny lengths, any backend: checks the script

Batch 1, 8 heads, head size 64, bfloat16 q, k, v (`--dtype`; cuDNN's fused attention takes
float16/bfloat16). Kinds: dot (`dot_product_attention`), l2 (`l2_attention`), metric (the
l2 kernel after the metric MLP g(u) = u + W2 tanh(W1 u + b1) + b2 on the 512-wide queries
and keys, hidden width 512, as `Attention(kind="metric")` computes it). Implementations:
xla (the plain kernel), blockwise, cudnn (skipped off CUDA). Each (length, implementation)
runs in its own subprocess (`XLA_PYTHON_CLIENT_PREALLOCATE=false`), which compiles the three
kinds ahead of time, reads XLA's memory analysis of each program (arguments + outputs +
temporaries: `XLA GB`), does not run programs that need more than `--memory-limit-gb`, and
times the rest interleaved (median of `--reps` after a warm-up); `peak GB` is the device's
`peak_bytes_in_use` in that subprocess (all three kinds), where the backend reports it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from metricattn import attention as A

KINDS = ("dot", "l2", "metric")
IMPLEMENTATIONS = ("xla", "blockwise", "cudnn")
GB = 2**30


def fwd_bwd(kernel):
  loss = lambda q, k, v: jnp.sum(kernel(q, k, v).astype(jnp.float32))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def metric_g(width: int, hidden: int):
  """g(u) = u + W2 tanh(W1 u + b1) + b2 on [b, n, heads, head_dim] viewed as [b, n, width]."""
  k1, k2 = jax.random.split(jax.random.key(1))
  w1 = jax.random.normal(k1, (width, hidden)) / width ** 0.5
  w2 = jax.random.normal(k2, (hidden, width)) / hidden ** 0.5

  def g(u):
    x = u.reshape(*u.shape[:2], -1)
    y = x + (jnp.tanh(x @ w1.astype(x.dtype) + 0.1) @ w2.astype(x.dtype) + 0.1).astype(x.dtype)
    return y.reshape(u.shape)
  return g


def kernels(implementation: str, width: int) -> dict:
  g = metric_g(width, width)
  dot = functools.partial(A.dot_product_attention, implementation=implementation)
  l2 = functools.partial(A.l2_attention, implementation=implementation)
  return {"dot": dot, "l2": l2, "metric": lambda q, k, v: l2(g(q), g(k), v)}


def point(n: int, impl: str, a) -> dict:
  """One (length, implementation), all kinds: in the subprocess that `--point` runs."""
  row = {"length": n, "implementation": impl}
  dev = jax.devices()[0]
  if impl == "cudnn" and not (dev.platform == "gpu" and "cuda" in dev.client.platform_version):
    return {**row, "skipped": "no CUDA GPU"}
  dtype = jnp.dtype(a.dtype)
  keys = jax.random.split(jax.random.key(0), 3)
  qkv = tuple(jax.random.normal(k, (1, n, a.heads, a.head_dim), dtype) for k in keys)
  fns = {}
  for kind, kernel in kernels(impl, a.heads * a.head_dim).items():
    try:
      fns[kind] = fwd_bwd(kernel).lower(*qkv).compile()
    except Exception as e:  # noqa: BLE001 -- a shape the implementation does not take
      row[f"{kind}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
      continue
    m = fns[kind].memory_analysis()
    row[f"{kind}_xla_bytes"] = (m.argument_size_in_bytes + m.output_size_in_bytes
                                + m.temp_size_in_bytes)
    if row[f"{kind}_xla_bytes"] > a.memory_limit_gb * GB:
      del fns[kind]
      row[f"{kind}_error"] = f"needs more than {a.memory_limit_gb} GB"
  if fns:
    for fn in fns.values():   # warm-up
      jax.block_until_ready(fn(*qkv))
    times = {kind: [] for kind in fns}
    for _ in range(a.reps):
      for kind, fn in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(fn(*qkv))
        times[kind].append(time.perf_counter() - t)
    for kind, ts in times.items():
      row[f"{kind}_s"] = statistics.median(ts)
  stats = dev.memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    row["peak_bytes"] = stats["peak_bytes_in_use"]
  return row


def table(rows: list[dict]) -> list[str]:
  from metricattn.reporting import markdown_table
  header = ["length", "implementation", "dot ms", "l2 ms", "metric ms", "l2/dot",
            "metric/dot", "XLA GB dot / l2 / metric", "peak GB", "notes"]
  out = []
  for r in rows:
    ms = lambda k: f"{r[k + '_s'] * 1e3:.2f}" if k + "_s" in r else "-"
    ratio = lambda k: (f"{r[k + '_s'] / r['dot_s']:.3f}" if k + "_s" in r and "dot_s" in r
                       else "-")
    gb = " / ".join(f"{r[k + '_xla_bytes'] / GB:.2f}" if k + "_xla_bytes" in r else "-"
                    for k in KINDS)
    notes = "; ".join([r["skipped"]] if "skipped" in r else
                      [f"{k}: {r[k + '_error']}" for k in KINDS if k + "_error" in r])
    peak = f"{r['peak_bytes'] / GB:.2f}" if "peak_bytes" in r else "-"
    out.append([r["length"], r["implementation"], ms("dot"), ms("l2"), ms("metric"),
                ratio("l2"), ratio("metric"), gb, peak, notes])
  return markdown_table(header, out)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768,65536")
  p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--memory-limit-gb", type=float, default=100.0,
                 help="do not run a program XLA says needs more than this")
  p.add_argument("--smoke", action="store_true",
                 help="lengths 64,96 and 1 repetition: checks the script on any backend")
  p.add_argument("--point", help=argparse.SUPPRESS)   # LENGTH,IMPL: the subprocess's job
  a = p.parse_args()
  if a.point:
    n, impl = a.point.split(",")
    print(json.dumps(point(int(n), impl, a)))
    return
  if a.smoke:
    a.lengths, a.reps = "64,96", 1
  from metricattn.reporting import machine_description
  dev = jax.devices()[0]
  print(f"{machine_description()}, device {dev.device_kind}; batch 1, {a.heads} heads, head "
        f"size {a.head_dim}, {a.dtype}, forward+backward")
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  rows = []
  for n in (int(x) for x in a.lengths.split(",")):
    for impl in a.implementations.split(","):
      cmd = [sys.executable, __file__, "--point", f"{n},{impl}", "--reps", str(a.reps),
             "--heads", str(a.heads), "--head-dim", str(a.head_dim), "--dtype", a.dtype,
             "--memory-limit-gb", str(a.memory_limit_gb)]
      t = time.perf_counter()
      done = subprocess.run(cmd, capture_output=True, text=True, env=env)
      if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1][:160]
        row = {"length": n, "implementation": impl,
               "skipped": f"exit {done.returncode}: {last}"}
      else:
        row = json.loads(done.stdout.strip().splitlines()[-1])
      row["wall_s"] = round(time.perf_counter() - t, 1)
      rows.append(row)
      print(json.dumps(row), flush=True)
  print()
  print("\n".join(table(rows)))


if __name__ == "__main__":
  main()
