"""Time the mesh IPN's train step for stacked seeds, vmapped against unrolled, in one process.

  python scripts/bench_mesh_step.py [--kinds softmax,l2,metric] [--seeds 3] [--steps 10]
      [--rounds 4]

The step is the trainer's (`metricattn.train.make_train_step`), jitted with donated state,
over `--seeds` seeds of configs/mesh_seg.py (quick budget's data, each seed its own batches)
mapped by `metricattn.feeder.over_seeds` both ways (`train.stacked_seeds`: "vmap" batches
every operation over the seed axis, "unroll" traces one copy of the step per seed). Per kind,
`--rounds` alternating rounds of `--steps` chained steps each (batches made on the host
beforehand and already on the device); prints each round's time per step, the medians,
vmap / unroll (> 1: unrolled is faster), compile times, and the load before each kind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from metricattn import train
from metricattn.feeder import STACKED_SEEDS, over_seeds, stack_batches, stack_trees
from metricattn.grid import point_config
from metricattn.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--kinds", default="softmax,l2,metric")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=4)
  p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                 help="config overrides (tests: data.num_train=4 data.num_test=2)")
  return p.parse_args(argv)


def kind_times(kind: str, a) -> dict:
  configs = []
  for seed in range(a.seeds):
    c = point_config(f"{ROOT / 'configs' / 'mesh_seg.py'}:attention={kind},steps=400", {},
                     a.set)
    c.seed = seed
    configs.append(c)
  built = [train.build(c) for c in configs]
  datas, (_, task, graphdef, _) = [b[0] for b in built], built[0]
  params = stack_trees([b[3] for b in built])
  tx = make_optimizer(configs[0])
  key = jax.vmap(train.dropout_key)(jnp.arange(a.seeds))
  batches = [jax.device_put(stack_batches([d.train_batch(s) for d in datas]))
             for s in range(a.steps)]
  state, compile_s = {}, {}
  for how in STACKED_SEEDS:
    fn = jax.jit(over_seeds(train.make_train_step(graphdef, task, tx),
                            (0, 0, 0, None, 0, None), how), donate_argnums=(0, 1))
    p = jax.tree.map(jnp.copy, params)
    o = jax.jit(jax.vmap(tx.init))(p)
    start = time.perf_counter()
    state[how] = [fn.lower(p, o, batches[0], jnp.int32(0), key, jnp.float32(1)).compile(), p, o]
    compile_s[how] = time.perf_counter() - start
  times = {how: [] for how in STACKED_SEEDS}
  for _ in range(a.rounds):
    for how in STACKED_SEEDS:
      step, p, o = state[how]
      p, o, _ = step(p, o, batches[0], jnp.int32(0), key, jnp.float32(1))  # warm
      jax.block_until_ready(p)
      start = time.perf_counter()
      for i, b in enumerate(batches):
        p, o, _ = step(p, o, b, jnp.int32(i), key, jnp.float32(1))
      jax.block_until_ready(p)
      times[how].append(1e3 * (time.perf_counter() - start) / len(batches))
      state[how][1:] = [p, o]
  return {"times": times, "compile": compile_s}


def main(argv=None) -> int:
  a = parse_args(argv)
  for kind in a.kinds.split(","):
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    r = kind_times(kind, a)
    med = {how: statistics.median(t) for how, t in r["times"].items()}
    print(f"{kind}, {a.seeds} seeds, load before {load}")
    for how in STACKED_SEEDS:
      rounds = " ".join(f"{t:.1f}" for t in r["times"][how])
      print(f"  {how:6s} ms/step {rounds}  median {med[how]:.1f}  "
            f"compile {r['compile'][how]:.1f} s")
    print(f"  vmap / unroll {med['vmap'] / med['unroll']:.2f}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
