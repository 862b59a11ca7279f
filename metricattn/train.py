"""The one trainer: `train_and_evaluate(config, workdir) -> summary dict`.

Read top to bottom: config checks, workdir, devices, data/model/optimizer, checkpoint
restore, the jitted step, the loop (log, evaluate, checkpoint), the summary.

Workdir contents:
  config.json     the config of the run
  metrics.jsonl   one JSON object per line: {"step", "split", metric...}
  summary.json    final metrics ("test/accuracy", "train/loss", ...) plus steps_per_second,
                  compile_seconds, wall_seconds, num_params
  checkpoints/    orbax checkpoints; rerunning the same command resumes from the latest
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from metricattn.checkpoint import Checkpointer, num_params
from metricattn.data import get_dataset
from metricattn.errors import UserError
from metricattn.models import build_model
from metricattn.optim import make_optimizer
from metricattn.tasks import get_task
from metricattn.writers import MetricWriter


class TrainingDiverged(UserError):
  """Loss or gradient became NaN/inf."""


# ---------------------------------------------------------------- config checks

def check_config(config) -> None:
  t = config.train
  for key in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    if t[key] <= 0:
      raise UserError(f"train.{key} must be a positive integer; got {t[key]}")


# ---------------------------------------------------------------- devices

def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh with axis `data` over all devices (one CPU here, many GPUs elsewhere)."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  return {k: jax.device_put(np.asarray(v), sharding) for k, v in batch.items()}


def build(config):
  """(data, task, graphdef, params) of a config: what training and evaluation share."""
  data = get_dataset(config)
  task = get_task(config)
  model = build_model(config, data.info, nnx.Rngs(params=config.seed))
  graphdef, params = nnx.split(model)
  return data, task, graphdef, params


# ---------------------------------------------------------------- the step

def make_train_step(graphdef, task, tx, base_key):
  """Pure step: (params, opt_state, batch, step) -> (params, opt_state, metrics).

  A step whose loss or gradient is not finite leaves the state unchanged and reports
  `finite = 0`, so the trainer can stop with the last good state.
  """

  def step_fn(params, opt_state, batch, step):
    rng = jax.random.fold_in(base_key, step)

    def loss_fn(p):
      return task.loss(nnx.merge(graphdef, p), batch, train=True, rngs=rng)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep, new_params, params)
    opt_state = jax.tree.map(keep, new_opt, opt_state)
    return params, opt_state, {**metrics, "grad_norm": grad_norm,
                               "finite": finite.astype(jnp.float32)}

  return step_fn


def make_eval_step(graphdef, task):
  return jax.jit(lambda params, batch: task.eval_sums(nnx.merge(graphdef, params), batch))


def evaluate(eval_step, params, data, task, graphdef, split, sharding) -> dict:
  sums: dict[str, float] = {}
  for batch in data.eval_batches(split):
    out = jax.device_get(eval_step(params, shard_batch(batch, sharding)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  metrics = task.finalize(sums)
  metrics.update(task.host_eval(nnx.merge(graphdef, params), data, split))
  return metrics


# ---------------------------------------------------------------- the run

def train_and_evaluate(config, workdir: str | Path) -> dict:
  wall_start = time.perf_counter()
  check_config(config)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
  total = int(config.train.steps)

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P("data"))
  if config.data.batch_size % jax.device_count():
    raise UserError(f"data.batch_size {config.data.batch_size} does not divide over "
                    f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")

  data, task, graphdef, params = build(config)
  tx = make_optimizer(config)
  params = jax.device_put(params, replicated)
  opt_state = jax.device_put(tx.init(params), replicated)

  # Restore the latest checkpoint of this workdir, if any.
  ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
  meta = {"step": 0, "train_seconds": 0.0, "timed_steps": 0, "wall_seconds": 0.0,
          "data_seconds": 0.0, "window": {}, "window_steps": 0}
  start = ckpt.latest_step() or 0
  if start:
    state, restored = ckpt.restore(start, {"params": params, "opt_state": opt_state})
    meta.update(restored)
    params, opt_state = state["params"], state["opt_state"]
  writer = MetricWriter(workdir, config, total, start)
  writer.info(f"{workdir}: {config.model.name}/{config.model.attention}, "
              f"{num_params(params):,} params, {jax.device_count()} device(s), "
              f"{'resuming at step ' + str(start) if start else 'starting'}")

  base_key = jax.random.key(config.seed)
  step_fn = make_train_step(graphdef, task, tx, base_key)
  jitted = jax.jit(step_fn, donate_argnums=(0, 1))
  eval_step = make_eval_step(graphdef, task)

  # Compile ahead of time so that compile time is measured apart from step time.
  t = time.perf_counter()
  if start < total:
    batch = shard_batch(data.train_batch(start), data_sharding)
    train_step = jitted.lower(params, opt_state, batch, jnp.int32(start)).compile()
  compile_seconds = time.perf_counter() - t

  window = {k: float(v) for k, v in meta["window"].items()}
  window_steps = meta["window_steps"]
  pending: list[dict] = []  # device metrics since the last host sync
  last_eval: dict[str, dict] = {}
  last_train: dict = {}
  mark = time.perf_counter()
  timed_from = start

  def sync(step: int) -> None:
    """Pulls pending metrics to the host; stops on NaN/inf; accounts step time."""
    nonlocal pending, window_steps, mark, timed_from
    host = jax.device_get(pending)
    for i, m in enumerate(host):
      if m["finite"] < 1:
        bad = step - len(host) + i + 1
        last = ckpt.latest_step()
        raise TrainingDiverged(
            f"training stopped: loss or gradient is NaN/inf at step {bad} (loss "
            f"{m['loss']}); the last good checkpoint "
            f"({'step ' + str(last) if last else 'none yet'}) is kept in {ckpt.directory}; "
            "lower optimizer.lr or set optimizer.grad_clip")
      for k, v in m.items():
        if k != "finite":
          window[k] = window.get(k, 0.0) + float(v)
      window_steps += 1
    pending = []
    meta["train_seconds"] += time.perf_counter() - mark
    meta["timed_steps"] += step - timed_from
    timed_from = step

  for step in range(start, total):
    if step > start:
      t = time.perf_counter()
      batch = shard_batch(data.train_batch(step), data_sharding)
      meta["data_seconds"] += time.perf_counter() - t
    params, opt_state, metrics = train_step(params, opt_state, batch, jnp.int32(step))
    pending.append(metrics)
    done = step + 1
    writer.advance(1)
    is_log = done % config.train.log_every == 0 or done == total
    is_eval = done % config.train.eval_every == 0 or done == total
    is_ckpt = done % config.train.checkpoint_every == 0 or done == total
    if not (is_log or is_eval or is_ckpt):
      continue
    jax.block_until_ready(params)
    sync(done)
    if is_log:
      last_train = {k: v / window_steps for k, v in window.items()}
      writer.write(done, "train", last_train)
      window, window_steps = {}, 0
    if is_eval:
      for split in data.eval_splits:
        last_eval[split] = evaluate(eval_step, params, data, task, graphdef, split,
                                    replicated)
        writer.write(done, split, last_eval[split])
    if is_ckpt:
      meta.update(step=done, window=window, window_steps=window_steps,
                  wall_seconds=meta["wall_seconds"] + time.perf_counter() - wall_start)
      wall_start = time.perf_counter()
      ckpt.save(done, {"params": params, "opt_state": opt_state}, meta)
    mark = time.perf_counter()

  ckpt.close()
  if not last_train:  # the run was already finished: report what its log says
    from metricattn.writers import read_jsonl
    for r in read_jsonl(writer.path):
      target = last_train if r["split"] == "train" else last_eval.setdefault(r["split"], {})
      target.update({k: v for k, v in r.items() if k not in ("step", "split")})
  summary = {f"train/{k}": v for k, v in last_train.items()}
  for split, m in last_eval.items():
    summary.update({f"{split}/{k}": v for k, v in m.items()})
  timed = meta["timed_steps"]
  summary.update(
      step=total, attention=config.model.attention, num_params=num_params(params),
      steps_per_second=timed / meta["train_seconds"] if meta["train_seconds"] else None,
      compile_seconds=compile_seconds,
      # Host time spent making batches, as a share of training time (an upper bound on the
      # time the device waited for data: batches are made while the previous step runs).
      data_wait_fraction=(meta["data_seconds"] / meta["train_seconds"]
                          if meta["train_seconds"] else None),
      wall_seconds=meta["wall_seconds"] + time.perf_counter() - wall_start,
      devices=jax.device_count(), platform=jax.devices()[0].platform)
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  writer.info(f"done: {json.dumps({k: v for k, v in summary.items() if '/' in k})}")
  writer.close()
  return summary
