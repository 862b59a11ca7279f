"""Time training steps of the l10n translation config with and without length buckets (#26).

  nice -n 10 python scripts/bench_buckets.py --model small --buckets 4 --steps 10 --rounds 3

One process, one data set (the Debian l10n corpus, `make l10n`; its tokenizer is trained once
and kept in --tokenizer-dir) and one model: each round times the same training steps
(batch `step` of the run, seed 0) first with every batch padded to the longest training
sentence (data.buckets = 0, today's batches) then cut to its length bucket, alternating, so
that both see the same load. Every program (one per bucket shape met) is compiled before
the rounds; the sum of compile times is printed apart. Also times one teacher-forced pass
over the validation split (`eval_sums`; plain: every chunk at full width, today's cost). Prints per round the seconds per step of each, the ratio plain / bucketed, the load
average (`uptime`), the process's CPU seconds per step and per wall second (on a loaded
machine the CPU seconds are the steadier measure), then the medians and the peak RSS.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metricattn.config_utils import load_config_file, set_override  # noqa: E402
from metricattn.data import get_dataset  # noqa: E402
from metricattn.models import build_model  # noqa: E402
from metricattn.optim import make_optimizer  # noqa: E402
from metricattn.tasks import get_task  # noqa: E402
from metricattn.train import Programs, dropout_key, make_eval_step, make_train_step  # noqa: E402


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="small", help="the l10n config's model: small | paper")
  p.add_argument("--attention", default="metric")
  p.add_argument("--buckets", type=int, default=4)
  p.add_argument("--batch", type=int, default=128, help="training sentence pairs per step")
  p.add_argument("--steps", type=int, default=10, help="training steps timed per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--no-eval", action="store_true", help="skip the validation pass")
  p.add_argument("--tokenizer-dir", default=str(ROOT / ".cache" / "bench-buckets"))
  return p.parse_args()


def load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process) of fn()."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
  a = parse_args()
  config = load_config_file(ROOT / "configs/l10n_translation.py",
                            f"model={a.model},attention={a.attention},batch={a.batch}")
  set_override(config, "data.tokenizer_dir", f"{a.tokenizer_dir}/{a.model}")
  set_override(config, "data.buckets", a.buckets)
  bucketed = get_dataset(config)
  plain = copy.copy(bucketed)
  plain.buckets = 0  # training batches as today: every one src_len x tgt_len
  print(f"l10n model={a.model} attention={a.attention} batch={a.batch}: src_len "
        f"{bucketed.info['src_len']}, tgt_len {bucketed.info['tgt_len']}, widths src "
        f"{bucketed.widths['src'].tolist()} tgt {bucketed.widths['tgt'].tolist()}", flush=True)

  task = get_task(config)
  graphdef, params = nnx.split(build_model(config, bucketed.info, nnx.Rngs(params=0)))
  tx = make_optimizer(config)
  opt_state = tx.init(params)
  key = dropout_key(0)
  programs = Programs(jax.jit(make_train_step(graphdef, task, tx), donate_argnums=(0, 1)))
  steps = range(a.steps)
  batches = {"plain": [plain.train_batch(s) for s in steps],
             "bucketed": [bucketed.train_batch(s) for s in steps]}
  shapes = sorted({b["src"].shape[1:] + b["tgt_in"].shape[1:] for b in batches["bucketed"]})
  print(f"bucketed shapes (src, tgt) of the {a.steps} steps: {shapes}", flush=True)
  for name in batches:
    for b in batches[name]:
      programs.get(params, opt_state, (b,), 0, key)
  print(f"compiled {len(programs.compiled)} programs in {programs.seconds:.1f} s", flush=True)

  def train(name):
    nonlocal params, opt_state
    for s, b in zip(steps, batches[name]):
      params, opt_state, metrics = programs.get(params, opt_state, (b,), s, key)(
          params, opt_state, b, jnp.int32(s), key, jnp.float32(1.0))
    jax.block_until_ready(params)

  times = {name: [] for name in batches}
  for r in range(a.rounds):
    row = []
    for name in batches:
      before = load()
      wall, cpu = timed(lambda: train(name))
      times[name].append(wall / a.steps)
      row.append(f"{name} {wall / a.steps:.3f} s/step, {cpu / a.steps:.3f} CPU s/step "
                 f"(cpu/wall {cpu / wall:.2f}, load {before})")
    ratio = times["plain"][-1] / times["bucketed"][-1]
    print(f"round {r}: " + "; ".join(row) + f"; ratio {ratio:.2f}", flush=True)
  med = {k: statistics.median(v) for k, v in times.items()}
  print(f"median s/step: plain {med['plain']:.3f}, bucketed {med['bucketed']:.3f}, "
        f"speed-up {med['plain'] / med['bucketed']:.2f}x", flush=True)

  if not a.no_eval:
    eval_step = make_eval_step(graphdef, task)
    for name, data in (("plain", plain), ("bucketed", bucketed)):
      run = lambda: [jax.block_until_ready(eval_step(params, b)) for b in data.eval_batches("val")]
      run()  # compile every shape
      wall, cpu = timed(run)
      print(f"val teacher-forced pass, {name}: {wall:.2f} s (cpu/wall {cpu / wall:.2f}, "
            f"load {load()})", flush=True)
  print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; "
        f"load {load()}", flush=True)


if __name__ == "__main__":
  main()
