"""Time the Moon IPN train step for 1 seed and for N seeds vmapped in one program.

  python scripts/bench_seeds.py [--seeds 10] [--kinds softmax,l2,metric] [--steps 100]
      [--reps 7] [--scaling 1,2,5,10,20] [--trainer-steps 2000]

The step is the trainer's (`metricattn.train.make_train_step`), jitted with donated state,
vmapped over a leading seed axis for N seeds as `train_seeds` does. A repetition runs
`--steps` chained steps (state fed from step to step, then block_until_ready); the variants'
repetitions are interleaved in one process, so machine noise hits both alike. Reported per
step: the minimum wall time (the best estimate on a shared machine), the median wall time,
and the median process CPU time (all threads; not inflated by waiting for a core).
Compilation is excluded; host-side batch making is not timed (the same batch is reused).
Prints the cost of N seeds relative to one and the speed-up N * t(1) / t(N).

With --cpu-devices D it also times the N seeds split over D CPU devices, each device running
its share of the seeds (`split`; the trainer does this with `--cpu_devices D`). With
--scaling it also times the vmapped step for several seed counts (CPU time). With
--trainer-steps it also runs the whole trainer (host-side batches, logging, evaluation)
for 1 seed and for N seeds vmapped, one after the other, and compares their steps/s. With
--process-steps it times whole `python -m metricattn.main` processes, as a user runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from metricattn.config_utils import load_config_file
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from flax import nnx

from metricattn.data import get_dataset
from metricattn.models import build_model
from metricattn.optim import make_optimizer
from metricattn.tasks import get_task
from metricattn.train import make_mesh, make_train_step, stack_trees

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "moons_ipn.py"


def moons_config(kind: str, seed: int):
  config = load_config_file(CONFIG, f"attention={kind}")
  config.seed = seed
  return config


def program(kind: str, seeds: list[int], stacked: bool, split: bool = False):
  """(run, state): run(state, n) performs n chained steps and returns the new state. With
  `split`, the seed axis is split over all devices (as the trainer does with --cpu_devices)."""
  configs = [moons_config(kind, s) for s in seeds]
  datas = [get_dataset(c) for c in configs]
  built = [nnx.split(build_model(c, d.info, nnx.Rngs(params=c.seed)))
           for c, d in zip(configs, datas)]
  graphdef = built[0][0]
  tx = make_optimizer(configs[0])
  step_fn = make_train_step(graphdef, get_task(configs[0]), tx)
  batches = [d.train_batch(0) for d in datas]
  if stacked:
    params = stack_trees([b[1] for b in built])
    opt_state = jax.vmap(tx.init)(params)
    batch, key = stack_trees(batches), jnp.stack([jax.random.key(s) for s in seeds])
    step_fn = jax.vmap(step_fn, in_axes=(0, 0, 0, None, 0, None))
  else:
    params, batch, key = built[0][1], batches[0], jax.random.key(seeds[0])
    opt_state = tx.init(params)
  batch = jax.tree.map(jnp.asarray, batch)
  if split:
    params, opt_state, batch, key = jax.device_put(
        (params, opt_state, batch, key), jax.sharding.NamedSharding(make_mesh(), P("data")))
  jitted = jax.jit(step_fn, donate_argnums=(0, 1))
  cost = jitted.lower(params, opt_state, batch, jnp.int32(0), key,
                      jnp.float32(1.0)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost

  def run(state, n: int):
    p, o = state
    for i in range(n):
      p, o, _ = jitted(p, o, batch, jnp.int32(i), key, jnp.float32(1.0))
    jax.block_until_ready(p)
    return p, o

  run.cost = {"flops": cost.get("flops", 0.0), "bytes": cost.get("bytes accessed", 0.0)}
  return run, (params, opt_state)


def bench(kind: str, n_seeds: int, steps: int, reps: int) -> dict[str, dict[str, float]]:
  """Seconds per step for 1 seed ("one") and n_seeds vmapped ("many"): the minimum and the
  median of the wall time, and the median process CPU time (all threads)."""
  variants = {"one": program(kind, [0], False),
              "many": program(kind, list(range(n_seeds)), True)}
  if jax.device_count() > 1:
    variants["split"] = program(kind, list(range(n_seeds)), True, split=True)
  for k in ("one", "many"):
    c = variants[k][0].cost
    print(f"{kind:8s} XLA cost analysis, {'1 seed' if k == 'one' else f'{n_seeds} seeds'}: "
          f"{c['flops'] / 1e6:.1f} MFLOP, {c['bytes'] / 1e6:.1f} MB accessed per step")
  states = {k: run(state, 3) for k, (run, state) in variants.items()}  # compile, warm up
  wall, cpu = {k: [] for k in variants}, {k: [] for k in variants}
  for _ in range(reps):
    for k, (run, _) in variants.items():
      t, c = time.perf_counter(), time.process_time()
      states[k] = run(states[k], steps)
      wall[k].append((time.perf_counter() - t) / steps)
      cpu[k].append((time.process_time() - c) / steps)
  return {k: {"min": min(wall[k]), "median": statistics.median(wall[k]),
              "cpu": statistics.median(cpu[k])} for k in variants}


def bench_scaling(kind: str, counts: list[int], steps: int, reps: int) -> None:
  """Vmapped step time for each number of seeds in `counts`, interleaved."""
  variants = {n: program(kind, list(range(n)), True) for n in counts}
  states = {n: run(state, 3) for n, (run, state) in variants.items()}
  cpu = {n: [] for n in counts}
  for _ in range(reps):
    for n, (run, _) in variants.items():
      c = time.process_time()
      states[n] = run(states[n], steps)
      cpu[n].append((time.process_time() - c) / steps)
  print(f"{kind:8s} vmapped step, median CPU time: " + ", ".join(
      f"{n} seeds {statistics.median(cpu[n]) * 1e6:.0f} us" for n in counts))


def bench_processes(kind: str, n_seeds: int, steps: int) -> None:
  """What a user pays: `python -m metricattn.main` for 1 seed and for n_seeds vmapped, each
  a fresh process (start-up, data, compilation with the persistent cache, evaluation,
  checkpoints), timed from outside."""
  import subprocess
  import sys
  import tempfile
  cmd = [sys.executable, "-m", "metricattn.main",
         f"--config={CONFIG}:attention={kind},steps={steps}"]
  with tempfile.TemporaryDirectory() as tmp:
    walls = {}
    for name, extra in (("one", []), ("many", [f"--seeds=0:{n_seeds}"])):
      t = time.perf_counter()
      subprocess.run(cmd + extra + [f"--workdir={Path(tmp) / name}"], check=True,
                     stdout=subprocess.DEVNULL, cwd=CONFIG.parents[1])
      walls[name] = time.perf_counter() - t
  print(f"{kind:8s} process wall, 1 seed {walls['one']:5.1f} s, {n_seeds} seeds vmapped "
        f"{walls['many']:5.1f} s: cost {walls['many'] / walls['one']:.2f}x")


def bench_trainer(kind: str, n_seeds: int, steps: int) -> None:
  """The whole trainer (batches, logging, evaluation): one run of 1 seed, one program of
  n_seeds vmapped, in temporary workdirs; prints steps/s and wall seconds of each."""
  import tempfile
  from metricattn.train import train_and_evaluate, train_seeds
  config = moons_config(kind, 0)
  config.train.steps = steps
  with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as quiet:
    with contextlib.redirect_stdout(quiet):  # the trainers' progress lines
      one = train_and_evaluate(config, Path(tmp) / "one")
      many = train_seeds(config, list(range(n_seeds)), Path(tmp) / "many")[0]
  for name, s in (("1 seed", one), (f"{n_seeds} seeds vmapped", many)):
    print(f"{kind:8s} trainer {name:17s} {s['steps_per_second']:7.1f} steps/s  wall "
          f"{s['wall_seconds']:5.1f} s (compile {s['compile_seconds']:.1f} s)")
  ratio = one["steps_per_second"] / many["steps_per_second"]
  wall = many["wall_seconds"] / one["wall_seconds"]
  print(f"{kind:8s} trainer steps: cost {ratio:.2f}x one seed, speed-up {n_seeds / ratio:.1f}x; "
        f"wall (compile, evaluation included): cost {wall:.2f}x, speed-up {n_seeds / wall:.1f}x")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--kinds", default="softmax,l2,metric")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--scaling", default="",
                 help="also time the vmapped step for these seed counts, e.g. 1,2,5,10,20")
  p.add_argument("--trainer-steps", type=int, default=0,
                 help="also time the whole trainer for this many steps (e.g. 2000)")
  p.add_argument("--process-steps", type=int, default=0,
                 help="also time `python -m metricattn.main` processes of this many steps, "
                      "1 seed against the seeds vmapped (e.g. 2000)")
  p.add_argument("--cpu-devices", type=int, default=0,
                 help="split the CPU into this many devices and also time the seeds split "
                      "over them ('split'; --seeds must divide evenly)")
  a = p.parse_args()
  if a.cpu_devices:
    if a.trainer_steps:
      p.error("--trainer-steps compares the trainers on one device; leave out --cpu-devices")
    jax.config.update("jax_num_cpu_devices", a.cpu_devices)
  print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); "
        f"Moon IPN train step, {a.steps} chained steps per repetition, median of {a.reps}")
  print(f"seconds per step; min and median wall time, median CPU time; cost = {a.seeds} "
        f"seeds / 1 seed; speed-up = {a.seeds} x one / many")
  for kind in a.kinds.split(","):
    t = bench(kind, a.seeds, a.steps, a.reps)
    for stat in ("min", "median", "cpu"):
      for variant, label in (("many", "vmapped"), ("split", "split")):
        if variant not in t:
          continue
        one, many = t["one"][stat], t[variant][stat]
        print(f"{kind:8s} {stat:6s} 1 seed {one * 1e6:6.0f} us   {a.seeds} seeds {label:7s} "
              f"{many * 1e6:6.0f} us   cost {many / one:4.2f}x   speed-up "
              f"{a.seeds * one / many:4.1f}x")
    if a.scaling:
      bench_scaling(kind, [int(n) for n in a.scaling.split(",")], a.steps, a.reps)
    if a.trainer_steps:
      bench_trainer(kind, a.seeds, a.trainer_steps)
    if a.process_steps:
      bench_processes(kind, a.seeds, a.process_steps)

if __name__ == "__main__":
  main()
