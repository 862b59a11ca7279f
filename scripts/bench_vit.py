"""Time the ViT train step of each attention kind side by side; print steps/s and ratios.

  python scripts/bench_vit.py [--args dataset=fashion_mnist,variant=Mu/7,batch=32] [--reps 20]

The configs come from configs/vit_image.py with the given arguments (only `attention`
differs between kinds). One process: the data is loaded once, each kind's jitted train step
(the trainer's own `make_train_step`) is compiled and warmed up, then the kinds are timed
alternately, `--reps` times each, and the median is reported, so machine noise hits all kinds
alike. Compilation is excluded. Also prints the host time to make one batch, as a share of
the softmax step time (what `data_wait_fraction` in a run's summary.json measures).
"""

from __future__ import annotations

import argparse
from metricattn.config_utils import load_config_file
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from bench_attention import time_interleaved
from metricattn.data import get_dataset
from metricattn.models import build_model, num_params
from metricattn.optim import make_optimizer
from metricattn.tasks import get_task
from metricattn.train import make_mesh, make_train_step, shard_batch

from metricattn.attention import KINDS
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vit_image.py"


def load_config(args: str):
  return load_config_file(CONFIG, args)


def step_for(config, data) -> tuple:
  """(jitted train step, its arguments, parameter count) for one kind.

  The whole step (new parameters, optimizer state and metrics) is returned, so that XLA
  cannot drop the backward pass or the update as unused.
  """
  model = build_model(config, data.info, nnx.Rngs(params=config.seed))
  graphdef, params = nnx.split(model)
  tx = make_optimizer(config)
  fn = jax.jit(make_train_step(graphdef, get_task(config), tx))
  batch = {k: jnp.asarray(v) for k, v in data.train_batch(0).items()}
  args = (params, tx.init(params), batch, jnp.int32(0), jax.random.key(config.seed),
          jnp.float32(1.0))
  return fn, args, num_params(model)


def batch_seconds(data, reps: int) -> float:
  """Median host time to make one training batch and put it on the device, as the trainer
  does (NumPy indexing, then `shard_batch` over the data mesh)."""
  sharding = NamedSharding(make_mesh(), P("data"))
  times = []
  for step in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(shard_batch(data.train_batch(step), sharding))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--args", default="dataset=fashion_mnist,variant=Mu/7,batch=32",
                 help="configs/vit_image.py arguments, without attention")
  p.add_argument("--reps", type=int, default=20)
  a = p.parse_args()
  configs = {k: load_config(f"{a.args},attention={k}") for k in KINDS}
  data = get_dataset(configs["softmax"])
  built = {k: step_for(c, data) for k, c in configs.items()}
  m = configs["softmax"]
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; ViT {m.model.variant}, "
        f"{m.data.name}, batch {m.data.batch_size}; medians of {a.reps} interleaved steps")
  t = time_interleaved({k: b[0] for k, b in built.items()},
                       {k: b[1] for k, b in built.items()}, a.reps)
  for k in KINDS:
    print(f"  {k:8s} {1 / t[k]:7.2f} steps/s  ({t[k] * 1e3:.1f} ms/step, "
          f"{built[k][2]:,} params)")
  print("  ratio (time per step) " +
        ", ".join(f"{k}/softmax = {t[k] / t['softmax']:.3f}" for k in KINDS[1:]))
  b = batch_seconds(data, a.reps)
  print(f"  host batch: {b * 1e3:.2f} ms = {b / t['softmax']:.1%} of a softmax step")


if __name__ == "__main__":
  main()
