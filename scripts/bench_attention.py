"""Time forward+backward of the dot-product and L2 kernels side by side, and the Moon IPN
train step per attention kind; print the ratios l2/dot (target: at most 1.1). Or, with
--lengths, the kernels' implementations against sequence length.

  python scripts/bench_attention.py [--shape 8,1024,8,64] [--reps 7]
  python scripts/bench_attention.py --lengths 1024,2048,4096,8192,16384,32768 [--reps 3]
      [--implementations xla,blockwise]
  python scripts/bench_attention.py --vs-jax 1024,2048,4096,8192 [--reps 5]

Repetitions of the variants are interleaved and the median is reported, so machine noise
hits all variants alike. Compilation is excluded.

--lengths: batch 1, 8 heads, head size 64 (`--heads`, `--head-dim`), forward+backward of
both kinds (dot, l2) with each implementation (xla: the plain kernel, blockwise) at each
length. Each (length, implementation) runs in its own subprocess, which compiles both kinds
ahead of time, reads XLA's memory analysis of each compiled program (arguments + outputs +
temporaries: the `XLA GB` columns), skips running when a program would need more than
`--memory-limit-gb` (the plain kernel at long lengths), else runs both once (warm-up) and
times dot and l2 interleaved (median of `--reps`; the warm-up alone when it took more than
`--budget-s`) and reports its peak
resident memory (`ru_maxrss` of the subprocess, both kinds and the JAX runtime included:
the `peak RSS GB` column). `uptime` is printed before and after.

--vs-jax: our plain kernels (`implementation="xla"`: dot, and l2 through its augmented
vectors) against `jax.nn.dot_product_attention(implementation="xla")` at batch 1, 8 heads,
head size 64, forward+backward, without a mask and with a causal one (ours as a boolean
mask array, jax's as `is_causal=True`), at each length: times interleaved (medians of
`--reps`) and XLA's buffers (arguments + outputs + temporaries) of each compiled program, with
the ratios to jax's (targets of issue #13: at most 1.05 in time and at most 1.0 in memory).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from metricattn import attention as A


def fwd_bwd(kernel):
  loss = lambda q, k, v: jnp.sum(kernel(q, k, v).astype(jnp.float32))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def naive_l2(q, k, v):
  """The broadcast form, for reference: builds [b, q, k, h, d]."""
  d2 = jnp.sum((q[:, :, None] - k[:, None]) ** 2, -1)             # [b, q, k, h]
  w = jax.nn.softmax(-d2 / jnp.sqrt(q.shape[-1]), axis=2)
  return jnp.einsum("bqkh,bkhd->bqhd", w, v)


def time_interleaved(fns: dict, args: dict, reps: int) -> dict[str, float]:
  for name, fn in fns.items():  # compile and warm up
    jax.block_until_ready(fn(*args[name]))
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*args[name]))
      times[name].append(time.perf_counter() - t)
  return {name: statistics.median(ts) for name, ts in times.items()}


def bench_kernels(shape, reps, with_naive):
  b, n, h, d = shape
  keys = jax.random.split(jax.random.key(0), 3)
  qkv = tuple(jax.random.normal(k, (b, n, h, d), jnp.float32) for k in keys)
  fns = {"dot": fwd_bwd(A.dot_product_attention), "l2": fwd_bwd(A.l2_attention)}
  if with_naive:
    fns["l2_naive"] = fwd_bwd(naive_l2)
  t = time_interleaved(fns, {k: qkv for k in fns}, reps)
  print(f"kernels fwd+bwd {list(shape)} float32: " +
        ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()))
  print(f"  ratio l2/dot = {t['l2'] / t['dot']:.3f}" +
        (f", l2_naive/dot = {t['l2_naive'] / t['dot']:.3f}" if with_naive else ""))


def bench_ipn(reps):
  from flax import nnx
  from metricattn.config_utils import load_config_file
  from metricattn.data import get_dataset
  from metricattn.models import build_model
  from metricattn.optim import make_optimizer
  from metricattn.tasks import get_task
  from metricattn.train import make_train_step
  fns, args = {}, {}
  for kind in ("softmax", "l2", "metric"):
    config = load_config_file("configs/moons_ipn.py", f"attention={kind}")
    data = get_dataset(config)
    graphdef, params = nnx.split(build_model(config, data.info, nnx.Rngs(params=0)))
    tx = make_optimizer(config)
    step = make_train_step(graphdef, get_task(config), tx)
    # The whole step (new params, optimizer state and metrics) is computed and returned.
    fns[kind] = jax.jit(step)
    args[kind] = (params, tx.init(params), data.train_batch(0), jnp.int32(0),
                  jax.random.key(0), jnp.float32(1.0))
  t = time_interleaved(fns, args, reps * 50)
  print("Moon IPN train step: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in t.items()))
  print(f"  ratio l2/softmax = {t['l2'] / t['softmax']:.3f}, "
        f"metric/softmax = {t['metric'] / t['softmax']:.3f}")


# ---------------------------------------------------------------- --lengths

KIND_KERNELS = {"dot": A.dot_product_attention, "l2": A.l2_attention}
LENGTH_IMPLEMENTATIONS = ("xla", "blockwise")
GB = 2**30


def memory_bytes(compiled) -> int:
  """Arguments + outputs + temporaries of a compiled program (XLA's memory analysis)."""
  m = compiled.memory_analysis()
  return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes


def length_point(n: int, impl: str, heads: int, head_dim: int, reps: int, budget_s: float,
                 limit_gb: float) -> dict:
  """One (length, implementation), both kinds: in the subprocess that `--point` runs."""
  keys = jax.random.split(jax.random.key(0), 3)
  qkv = tuple(jax.random.normal(k, (1, n, heads, head_dim), jnp.float32) for k in keys)
  fns, row = {}, {"length": n, "implementation": impl}
  for kind, kernel in KIND_KERNELS.items():
    t = time.perf_counter()
    fns[kind] = fwd_bwd(functools.partial(kernel, implementation=impl)).lower(*qkv).compile()
    row[f"{kind}_compile_s"] = time.perf_counter() - t
    row[f"{kind}_xla_bytes"] = memory_bytes(fns[kind])
  if max(row[f"{k}_xla_bytes"] for k in fns) > limit_gb * GB:
    return {**row, "skipped": f"needs more than {limit_gb} GB"}
  def run_all() -> dict[str, float]:
    out = {}
    for kind, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*qkv))
      out[kind] = time.perf_counter() - t
    return out

  first = run_all()       # a warm-up, or the one measurement when it takes over budget_s
  runs = [first] if sum(first.values()) > budget_s else [run_all() for _ in range(reps)]
  times = {kind: [r[kind] for r in runs] for kind in fns}
  for kind, ts in times.items():
    row[f"{kind}_s"], row[f"{kind}_runs"] = statistics.median(ts), len(ts)
  row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB
  return row


def uptime() -> str:
  return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def bench_lengths(a) -> None:
  from metricattn.reporting import machine_description, markdown_table
  lengths = [int(x) for x in a.lengths.split(",")]
  print(f"{machine_description()}; batch 1, {a.heads} heads, head size {a.head_dim}, float32, "
        f"forward+backward; blocks {A.blockwise.BLOCK_Q}x{A.blockwise.BLOCK_K}")
  print(f"before: {uptime()}", flush=True)
  rows = []
  for n in lengths:
    for impl in a.implementations.split(","):
      cmd = [sys.executable, __file__, "--point", f"{n},{impl}", "--heads", str(a.heads),
             "--head-dim", str(a.head_dim), "--reps", str(a.reps), "--budget-s",
             str(a.budget_s), "--memory-limit-gb", str(a.memory_limit_gb)]
      done = subprocess.run(cmd, capture_output=True, text=True)
      if done.returncode:
        row = {"length": n, "implementation": impl,
               "skipped": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
      else:
        row = json.loads(done.stdout.strip().splitlines()[-1])
      rows.append(row)
      print(json.dumps(row), flush=True)
  print(f"after: {uptime()}")
  print()
  print("\n".join(markdown_table(*length_table(rows))))


def length_table(rows: list[dict]) -> tuple[list[str], list[list]]:
  """Header and rows: per (length, implementation) both kinds' times, l2/dot, blockwise/xla,
  time over length squared (relative to the first length), memory."""
  first = {}
  header = ["length", "implementation", "dot s", "l2 s", "l2/dot", "blockwise/xla (dot)",
            "dot s / (n/1024)^2", "XLA GB dot", "XLA GB l2", "peak RSS GB", "runs"]
  xla_dot = {r["length"]: r.get("dot_s") for r in rows if r["implementation"] == "xla"}
  out = []
  for r in rows:
    n, impl = r["length"], r["implementation"]
    gb = lambda key: f"{r[key] / GB:.2f}" if key in r else "-"
    if "dot_s" not in r:
      out.append([n, impl, "-", "-", "-", "-", "-", gb("dot_xla_bytes"), gb("l2_xla_bytes"),
                  f"not run: {r['skipped']}", "-"])
      continue
    first.setdefault(impl, r["dot_s"] / (n / 1024) ** 2)
    ratio = (f"{r['dot_s'] / xla_dot[n]:.3f}" if impl == "blockwise" and xla_dot.get(n)
             else "-")
    out.append([n, impl, f"{r['dot_s']:.3f}", f"{r['l2_s']:.3f}",
                f"{r['l2_s'] / r['dot_s']:.3f}", ratio, f"{r['dot_s'] / (n / 1024) ** 2:.3f}",
                gb("dot_xla_bytes"), gb("l2_xla_bytes"), f"{r['peak_rss_bytes'] / GB:.2f}",
                f"{r['dot_runs']}"])
  return header, out


# ---------------------------------------------------------------- --vs-jax

def jax_xla(q, k, v, causal: bool):
  return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")


def ours(kernel, q, k, v, causal: bool):
  mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool)) if causal else None
  return kernel(q, k, v, mask=mask, implementation="xla")


def bench_vs_jax(a) -> None:
  from metricattn.reporting import machine_description, markdown_table
  print(f"{machine_description()}; batch 1, {a.heads} heads, head size {a.head_dim}, float32, "
        f"forward+backward, medians of {a.reps} interleaved runs")
  print(f"before: {uptime()}", flush=True)
  header = ["length", "mask", "jax.nn xla s", "dot s", "l2 s", "dot/jax", "l2/jax",
            "jax.nn XLA GB", "dot GB", "l2 GB", "dot/jax GB", "l2/jax GB"]
  rows = []
  for n in [int(x) for x in a.vs_jax.split(",")]:
    keys = jax.random.split(jax.random.key(0), 3)
    qkv = tuple(jax.random.normal(k, (1, n, a.heads, a.head_dim), jnp.float32) for k in keys)
    for causal in (False, True):
      kernels = {"jax": functools.partial(jax_xla, causal=causal),
                 "dot": functools.partial(ours, A.dot_product_attention, causal=causal),
                 "l2": functools.partial(ours, A.l2_attention, causal=causal)}
      fns = {name: fwd_bwd(kernel).lower(*qkv).compile() for name, kernel in kernels.items()}
      mem = {name: memory_bytes(fn) for name, fn in fns.items()}
      t = time_interleaved(fns, {name: qkv for name in fns}, a.reps)
      row = [n, "causal" if causal else "none", f"{t['jax']:.3f}", f"{t['dot']:.3f}",
             f"{t['l2']:.3f}", f"{t['dot'] / t['jax']:.3f}", f"{t['l2'] / t['jax']:.3f}",
             *(f"{mem[k] / GB:.2f}" for k in ("jax", "dot", "l2")),
             f"{mem['dot'] / mem['jax']:.3f}", f"{mem['l2'] / mem['jax']:.3f}"]
      rows.append(row)
      print(json.dumps(dict(zip(header, row))), flush=True)
      del fns
  print(f"after: {uptime()}")
  print()
  print("\n".join(markdown_table(header, rows)))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shape", default="8,1024,8,64", help="batch,length,heads,head_dim")
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--naive", action="store_true", help="also time the broadcast L2 form")
  p.add_argument("--lengths", help="comma-separated lengths: the implementations' table")
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--budget-s", type=float, default=60.0,
                 help="--lengths: one run of both kinds longer than this is not repeated")
  p.add_argument("--memory-limit-gb", type=float, default=6.0,
                 help="--lengths: skip a program XLA says needs more memory than this")
  p.add_argument("--implementations", default=",".join(LENGTH_IMPLEMENTATIONS),
                 help="--lengths: which implementations")
  p.add_argument("--vs-jax", help="comma-separated lengths: ours against jax.nn's kernel")
  p.add_argument("--point", help=argparse.SUPPRESS)   # LENGTH,IMPL: the subprocess's job
  a = p.parse_args()
  if a.point:
    n, impl = a.point.split(",")
    print(json.dumps(length_point(int(n), impl, a.heads, a.head_dim, a.reps, a.budget_s,
                                  a.memory_limit_gb)))
    return
  if a.lengths:
    bench_lengths(a)
    return
  if a.vs_jax:
    bench_vs_jax(a)
    return
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.devices()[0].platform})")
  bench_kernels(tuple(int(x) for x in a.shape.split(",")), a.reps, a.naive)
  bench_ipn(a.reps)


if __name__ == "__main__":
  main()
