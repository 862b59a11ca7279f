"""Time forward+backward of the dot-product and L2 kernels side by side, and the Moon IPN
train step per attention kind; print the ratios l2/dot (target: at most 1.1).

  python scripts/bench_attention.py [--shape 8,1024,8,64] [--reps 7]

Repetitions of the variants are interleaved and the median is reported, so machine noise
hits all variants alike. Compilation is excluded.
"""

from __future__ import annotations

import argparse
import statistics
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


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shape", default="8,1024,8,64", help="batch,length,heads,head_dim")
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--naive", action="store_true", help="also time the broadcast L2 form")
  a = p.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.devices()[0].platform})")
  bench_kernels(tuple(int(x) for x in a.shape.split(",")), a.reps, a.naive)
  bench_ipn(a.reps)


if __name__ == "__main__":
  main()
