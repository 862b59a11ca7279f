"""Estimate what a translation config's full run costs, without its data.

  python scripts/translation_cost.py [--config=configs/multi30k_transformer.py:attention=metric]
      [--src-len 64 --tgt-len 64 --vocab 8000] [--time-batch 8] [--reps 3]

For the config's model and optimizer at the given padded lengths and vocabulary size:
  - the FLOPs of one training step at the config's batch size, from XLA's cost analysis of
    the compiled step (the trainer's own `make_train_step`);
  - XLA's buffer sizes for that step (arguments, outputs and temporaries): the memory the
    step needs on one device, about what a GPU needs too;
  - the measured time of the step at `--time-batch` on this machine (median of `--reps`
    after compilation), hence the FLOP/s reached here;
  - projections by FLOPs (an estimate): this machine's time per full step and for the
    whole run (`train.steps`), and the GPU hours of the run at 25 and 100 TFLOP/s
    sustained (float32 with TF32 matmuls on an A100/H100-class GPU; an assumption).
Evaluation (teacher-forced loss plus greedy decoding of val and test each epoch) is not
included.
"""

from __future__ import annotations

import argparse
from metricattn.config_utils import load_config_file
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metricattn.models import build_model, num_params
from metricattn.optim import make_optimizer
from metricattn.tasks import get_task
from metricattn.train import dropout_key, make_train_step

GPU_TFLOPS = (25.0, 100.0)


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  return load_config_file(path, arg)


def batch(n: int, src_len: int, tgt_len: int, vocab: int, seed: int = 0) -> dict:
  """Random full-length sentence pairs (no padding: the padded lengths are what costs)."""
  rng = np.random.default_rng(seed)
  ids = lambda length: rng.integers(4, vocab, size=(n, length), dtype=np.int32)
  return {"src": ids(src_len), "tgt_in": ids(tgt_len), "tgt_out": ids(tgt_len)}


def compile_step(config, b: dict, info: dict, seed: int = 0):
  """(compiled step, its inputs) for batch `b`: the trainer's own `make_train_step`, jitted
  with donated state, parameters and dropout key of `seed`. `info`: the dataset's
  (src_vocab_size, tgt_vocab_size)."""
  graphdef, params = nnx.split(build_model(config, info, nnx.Rngs(params=seed)))
  tx = make_optimizer(config)
  fn = jax.jit(make_train_step(graphdef, get_task(config), tx), donate_argnums=(0, 1))
  args = [params, tx.init(params), b, jnp.int32(0), dropout_key(seed), jnp.float32(1.0)]
  return fn.lower(*args).compile(), args


def flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def time_step(compiled, args: list, reps: int) -> float:
  params, opt = args[0], args[1]
  times = []
  for _ in range(reps + 1):  # the first call is a warm-up
    t = time.perf_counter()
    params, opt, _ = compiled(params, opt, *args[2:])
    jax.block_until_ready(params)
    times.append(time.perf_counter() - t)
  return statistics.median(times[1:])


def report(config, a) -> None:
  m = config.model
  full = batch(config.data.batch_size, a.src_len, a.tgt_len, a.vocab)
  info = {"src_vocab_size": a.vocab, "tgt_vocab_size": a.vocab}
  compiled, args = compile_step(config, full, info)
  f_full, mem = flops(compiled), compiled.memory_analysis()
  n = num_params(args[0])
  del compiled, args
  small, args = compile_step(config, batch(a.time_batch, a.src_len, a.tgt_len, a.vocab), info)
  f_small = flops(small)
  secs = time_step(small, args, a.reps)
  steps = int(config.train.steps)
  run_flops = f_full * steps
  gib = lambda x: x / 2**30
  print(f"{m.attention}: {n:,} params; batch {config.data.batch_size} x ({a.src_len} + "
        f"{a.tgt_len}) tokens: {f_full / 1e12:.2f} TFLOP per step")
  print(f"  XLA buffers per step: arguments {gib(mem.argument_size_in_bytes):.2f} GiB, "
        f"outputs {gib(mem.output_size_in_bytes):.2f} GiB (aliased "
        f"{gib(mem.alias_size_in_bytes):.2f}), temporaries {gib(mem.temp_size_in_bytes):.2f} GiB")
  print(f"  measured here: batch {a.time_batch}: {secs:.3f} s per step, "
        f"{f_small / secs / 1e9:.1f} GFLOP/s")
  print(f"  projected here: {secs * f_full / f_small:.1f} s per full step; run of {steps:,} "
        f"steps: {run_flops / 1e15:.1f} PFLOP, {secs * run_flops / f_small / 3600:,.0f} CPU hours")
  print("  projected GPU hours for the run: " +
        ", ".join(f"{run_flops / (t * 1e12) / 3600:.1f} at {t:g} TFLOP/s" for t in GPU_TFLOPS))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/multi30k_transformer.py:attention=metric")
  p.add_argument("--kinds", default="softmax,l2,metric", help="model.attention values")
  p.add_argument("--src-len", type=int, default=64, help="padded source length")
  p.add_argument("--tgt-len", type=int, default=64, help="padded target length")
  p.add_argument("--vocab", type=int, default=8000, help="source and target vocabulary")
  p.add_argument("--time-batch", type=int, default=8, help="batch of the timed steps")
  p.add_argument("--reps", type=int, default=3)
  a = p.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {a.config}")
  for kind in a.kinds.split(","):
    config = load_config(a.config)
    config.model.attention = kind
    report(config, a)


if __name__ == "__main__":
  main()
