"""The one trainer: `train_and_evaluate(config, workdir) -> summary dict`.

Read top to bottom: config checks, devices, the jitted step, evaluation, the run (data,
model, optimizer, checkpoint restore, the loop: log, evaluate, checkpoint; the summary).

`train_seeds(config, seeds, root)` runs the same loop for several seeds of one config in a
single compiled program: the step is vmapped over a leading seed axis. Each seed gets the
workdir files of a separate run (ROOT/seed=N/...); the stacked state is checkpointed once in
ROOT/checkpoints. For small models (the IPN) this is far cheaper than separate processes.

Workdir contents:
  config.json     the config of the run
  metrics.jsonl   one JSON object per line: {"step", "split", metric...}
  summary.json    final metrics ("test/accuracy", "train/loss", ...) plus steps_per_second,
                  compile_seconds, wall_seconds, data_wait_fraction, num_params
  checkpoints/    orbax checkpoints; rerunning the same command resumes from the latest
"""

from __future__ import annotations

import copy
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
from metricattn.optim import Plateau, make_optimizer
from metricattn.tasks import get_task
from metricattn.writers import MetricWriter, read_jsonl


class TrainingDiverged(UserError):
  """Loss or gradient became NaN/inf."""


# ---------------------------------------------------------------- config checks

def check_config(config, split_batch: bool = True) -> None:
  t = config.train
  for key in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    if t[key] <= 0:
      raise UserError(f"train.{key} must be a positive integer; got {t[key]}")
  if split_batch and config.data.batch_size % jax.device_count():
    raise UserError(f"data.batch_size {config.data.batch_size} does not divide over "
                    f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")


def build(config):
  """(data, task, graphdef, params) of a config: what training and evaluation share."""
  data = get_dataset(config)
  task = get_task(config)
  model = build_model(config, data.info, nnx.Rngs(params=config.seed))
  graphdef, params = nnx.split(model)
  return data, task, graphdef, params


# ---------------------------------------------------------------- devices

def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh with axis `data` over all devices (one CPU here, many GPUs elsewhere)."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def seeds_split_over_devices(num_seeds: int) -> bool:
  """Whether vmapped seeds are split over the devices, each device training its own seeds
  with no communication (when they divide evenly); otherwise every seed's batch is split."""
  return jax.device_count() > 1 and num_seeds % jax.device_count() == 0


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  return {k: jax.device_put(np.asarray(v), sharding) for k, v in batch.items()}


# ---------------------------------------------------------------- the step

def make_train_step(graphdef, task, tx):
  """Pure step: (params, opt_state, batch, step, key, lr_scale) -> (params, opt_state, metrics).

  `key` is the run's base key (dropout uses fold_in(key, step)); `lr_scale` multiplies the
  update (ReduceLROnPlateau). A step whose loss or gradient is not finite leaves the state
  unchanged and reports `finite = 0`, so the trainer can stop with the last good state.
  """

  def step_fn(params, opt_state, batch, step, key, lr_scale):
    def loss_fn(p):
      return task.loss(nnx.merge(graphdef, p), batch, train=True,
                       rngs=jax.random.fold_in(key, step))

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: lr_scale * u, updates)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep, new_params, params)
    opt_state = jax.tree.map(keep, new_opt, opt_state)
    return params, opt_state, {**metrics, "grad_norm": grad_norm,
                               "finite": finite.astype(jnp.float32)}

  return step_fn


INDEX_BLOCK = 64  # steps whose batch indices go to the device in one transfer


def gathering(step_fn):
  """The step fed with the device-resident training arrays and a block of batch indices
  [INDEX_BLOCK, batch] that holds its own at row step % INDEX_BLOCK."""

  def fn(params, opt_state, arrays, idx_block, step, key, lr_scale):
    idx = idx_block[step % INDEX_BLOCK]
    return step_fn(params, opt_state, {k: v[idx] for k, v in arrays.items()}, step, key,
                   lr_scale)

  return fn


RESIDENT_MAX_BYTES = 1 << 30


def resident_arrays(datas) -> tuple[dict | None, bool]:
  """(arrays, per_seed): the training arrays to keep on the device, or None (a dataset makes
  its batches otherwise, e.g. with augmentation or tokens, or they exceed 1 GiB). They are
  shared by all runs when equal (the same images for every seed), else stacked per run."""
  arrays = [d.resident_arrays() if hasattr(d, "resident_arrays") else None for d in datas]
  if any(a is None for a in arrays):
    return None, False
  first = arrays[0]
  shared = all(a.keys() == first.keys() and all(np.array_equal(a[k], first[k]) for k in a)
               for a in arrays[1:])
  copies = 1 if shared else len(arrays)
  if copies * sum(v.nbytes for v in first.values()) > RESIDENT_MAX_BYTES:
    return None, False
  return (first if shared else stack_trees(arrays)), not shared


# ---------------------------------------------------------------- evaluation

def make_eval_step(graphdef, task, stacked: bool = False):
  fn = lambda params, batch: task.eval_sums(nnx.merge(graphdef, params), batch)
  return jax.jit(jax.vmap(fn) if stacked else fn)


def evaluate(eval_step, params, data, task, graphdef, split, sharding) -> dict:
  """Metrics of one run on one split."""
  return evaluate_stack(eval_step, params, [data], task, graphdef, split, sharding, False)[0]


def evaluate_stack(eval_step, params, datas, task, graphdef, split, sharding,
                   stacked: bool) -> list[dict]:
  """Metrics per run; with `stacked`, params have a leading seed axis matching `datas`."""
  sums = [dict() for _ in datas]
  for batches in zip(*(d.eval_batches(split) for d in datas)):
    batch = stack_trees(batches) if stacked else batches[0]
    out = jax.device_get(eval_step(params, shard_batch(batch, sharding)))
    for i, s in enumerate(sums):
      for k, v in out.items():
        s[k] = s.get(k, 0.0) + float(v[i] if stacked else v)
  results = []
  for i, (d, s) in enumerate(zip(datas, sums)):
    metrics = task.finalize(s)
    p = jax.tree.map(lambda x: x[i], params) if stacked else params
    metrics.update(task.host_eval(nnx.merge(graphdef, p), d, split))
    results.append(metrics)
  return results


def stack_trees(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


# ---------------------------------------------------------------- the run

class Run:
  """Host-side bookkeeping of one seed: its data, writer, logging window and last metrics."""

  def __init__(self, config, workdir: Path, data, meta: dict, total: int, start: int,
               progress: bool):
    self.config, self.workdir, self.data = config, workdir, data
    self.window = {k: float(v) for k, v in meta.get("window", {}).items()}
    self.window_steps = meta.get("window_steps", 0)
    self.writer = MetricWriter(workdir, config, total, start, progress)
    self.last_train: dict = {}
    self.last_eval: dict[str, dict] = {}

  def add(self, metrics: dict) -> None:
    for k, v in metrics.items():
      if k != "finite":
        self.window[k] = self.window.get(k, 0.0) + float(v)
    self.window_steps += 1

  def log_train(self, step: int) -> None:
    self.last_train = {k: v / self.window_steps for k, v in self.window.items()}
    self.writer.write(step, "train", self.last_train)
    self.window, self.window_steps = {}, 0

  def recover_logged(self) -> None:
    """For a run that was already finished: its final metrics from metrics.jsonl."""
    for r in read_jsonl(self.writer.path):
      target = self.last_train if r["split"] == "train" else self.last_eval.setdefault(r["split"], {})
      target.update({k: v for k, v in r.items() if k not in ("step", "split")})


def prepare_workdir(config, workdir: Path):
  """Creates the workdir and writes config.json; a run-local tokenizer lives there."""
  workdir.mkdir(parents=True, exist_ok=True)
  if "tokenizer_dir" in config.data and not config.data.tokenizer_dir:
    config.data.tokenizer_dir = str(workdir)
  (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")


def train_and_evaluate(config, workdir: str | Path) -> dict:
  """Trains one run in `workdir` (resuming from its checkpoint) and returns its summary."""
  return _train([config], [Path(workdir)], Path(workdir), stacked=False)[0]


def train_seeds(config, seeds: list[int], root: str | Path) -> list[dict]:
  """Trains `seeds` of `config` vmapped in one program; workdirs ROOT/seed=N."""
  configs = []
  for s in seeds:
    c = copy.deepcopy(config)
    c.seed = s
    configs.append(c)
  root = Path(root)
  return _train(configs, [root / f"seed={s}" for s in seeds], root, stacked=True)


def _train(configs, workdirs: list[Path], ckpt_dir: Path, stacked: bool) -> list[dict]:
  wall_start = time.perf_counter()
  config = configs[0]  # everything but the seed is shared
  by_seed = stacked and seeds_split_over_devices(len(configs))
  check_config(config, split_batch=not by_seed)
  for c, w in zip(configs, workdirs):
    prepare_workdir(c, w)
  total = int(config.train.steps)

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  # State: replicated, or split along the seed axis. Batches: split along the batch axis,
  # or along the seed axis. Evaluation batches: like the state.
  state_sharding = NamedSharding(mesh, P("data")) if by_seed else replicated
  data_sharding = NamedSharding(mesh, P(None, "data") if stacked and not by_seed else P("data"))

  built = [build(c) for c in configs]
  datas = [b[0] for b in built]
  _, task, graphdef, _ = built[0]
  params = stack_trees([b[3] for b in built]) if stacked else built[0][3]
  tx = make_optimizer(config)
  params = jax.device_put(params, state_sharding)
  opt_state = jax.device_put((jax.vmap(tx.init) if stacked else tx.init)(params),
                             state_sharding)
  keys = [jax.random.key(c.seed) for c in configs]
  key = jax.device_put(jnp.stack(keys), state_sharding) if stacked else keys[0]
  plateau = Plateau(config)
  if stacked and plateau.enabled:
    raise UserError("optimizer.plateau is not supported with vmapped seeds; run seeds "
                    "separately")

  # Restore the latest checkpoint, if any.
  ckpt = Checkpointer(ckpt_dir, config.train.keep_checkpoints)
  meta = {"step": 0, "train_seconds": 0.0, "timed_steps": 0, "wall_seconds": 0.0,
          "data_seconds": 0.0, "runs": [{} for _ in configs], "plateau": plateau.state}
  start = ckpt.latest_step() or 0
  if start:
    state, restored = ckpt.restore(start, {"params": params, "opt_state": opt_state})
    params, opt_state = state["params"], state["opt_state"]
    meta.update(restored)
    plateau.state = meta["plateau"]
  runs = [Run(c, w, d, m, total, start, progress=i == 0)
          for i, (c, w, d, m) in enumerate(zip(configs, workdirs, datas, meta["runs"]))]
  n_params = num_params(params) // (len(configs) if stacked else 1)
  runs[0].writer.info(
      f"{ckpt_dir}: {config.model.name}/{config.model.attention}, {n_params:,} params, "
      f"{len(configs)} seed(s){' vmapped' if stacked else ''}, {jax.device_count()} "
      f"device(s){' (seeds split over them)' if by_seed else ''}, "
      f"{'resuming at step ' + str(start) if start else 'starting'}")

  step_fn = make_train_step(graphdef, task, tx)
  arrays, per_seed = resident_arrays(datas)
  if arrays is not None:
    arrays = jax.device_put(arrays, state_sharding if per_seed else replicated)
    step_fn = gathering(step_fn)
    if stacked:
      step_fn = jax.vmap(step_fn, in_axes=(0, 0, 0 if per_seed else None, 0, None, 0, None))
  elif stacked:
    step_fn = jax.vmap(step_fn, in_axes=(0, 0, 0, None, 0, None))
  jitted = jax.jit(step_fn, donate_argnums=(0, 1))
  eval_step = make_eval_step(graphdef, task, stacked)

  # Index blocks: [(seeds,) INDEX_BLOCK, batch], split like the batches they select.
  index_sharding = NamedSharding(mesh, P("data") if by_seed else
                                 P(*[None] * (2 if stacked else 1), "data"))
  block = {"first": None, "idx": None}

  def train_batch(step: int) -> tuple:
    """The step's data arguments: (batch,), or (arrays, index block) with resident arrays."""
    if arrays is not None:
      first = step - step % INDEX_BLOCK
      if block["first"] != first:
        idx = [np.stack([d.train_indices(s) for s in range(first, first + INDEX_BLOCK)])
               for d in datas]
        block.update(first=first, idx=jax.device_put(np.stack(idx) if stacked else idx[0],
                                                     index_sharding))
      return arrays, block["idx"]
    batches = [d.train_batch(step) for d in datas]
    return (shard_batch(stack_trees(batches) if stacked else batches[0], data_sharding),)

  # Compile ahead of time so that compile time is measured apart from step time.
  t = time.perf_counter()
  if start < total:
    batch = train_batch(start)
    train_step = jitted.lower(params, opt_state, *batch, jnp.int32(start), key,
                              jnp.float32(1.0)).compile()
  compile_seconds = time.perf_counter() - t

  pending: list[dict] = []  # device metrics since the last host sync
  mark = time.perf_counter()
  timed_from = start

  def sync(step: int) -> None:
    """Pulls pending metrics to the host; stops on NaN/inf; accounts step time."""
    nonlocal pending, timed_from
    host = jax.device_get(pending)
    for i, m in enumerate(host):
      for r, run in enumerate(runs):
        mr = {k: v[r] for k, v in m.items()} if stacked else m
        if mr["finite"] < 1:
          bad, last = step - len(host) + i + 1, ckpt.latest_step()
          raise TrainingDiverged(
              f"training stopped: loss or gradient is NaN/inf at step {bad} (seed "
              f"{run.config.seed}, loss {mr['loss']}); the last good checkpoint "
              f"({'step ' + str(last) if last else 'none yet'}) is kept in "
              f"{ckpt.directory}; lower optimizer.lr or set optimizer.grad_clip")
        run.add(mr)
    pending = []
    meta["train_seconds"] += time.perf_counter() - mark
    meta["timed_steps"] += step - timed_from
    timed_from = step

  for step in range(start, total):
    if step > start:
      t = time.perf_counter()
      batch = train_batch(step)
      meta["data_seconds"] += time.perf_counter() - t
    params, opt_state, metrics = train_step(params, opt_state, *batch, jnp.int32(step), key,
                                            jnp.float32(plateau.scale))
    pending.append(metrics)
    done = step + 1
    runs[0].writer.advance(1)
    is_log = done % config.train.log_every == 0 or done == total
    is_eval = done % config.train.eval_every == 0 or done == total
    is_ckpt = done % config.train.checkpoint_every == 0 or done == total
    if not (is_log or is_eval or is_ckpt):
      continue
    jax.block_until_ready(params)
    sync(done)
    if is_log:
      for run in runs:
        run.log_train(done)
    if is_eval:
      for split in datas[0].eval_splits:
        results = evaluate_stack(eval_step, params, datas, task, graphdef, split,
                                 state_sharding, stacked)
        for run, metrics in zip(runs, results):
          run.last_eval[split] = metrics
          run.writer.write(done, split, metrics)
      plateau.update(done, [run.last_eval for run in runs])
    if is_ckpt:
      meta.update(step=done, plateau=plateau.state,
                  runs=[{"window": r.window, "window_steps": r.window_steps} for r in runs],
                  wall_seconds=meta["wall_seconds"] + time.perf_counter() - wall_start)
      wall_start = time.perf_counter()
      ckpt.save(done, {"params": params, "opt_state": opt_state}, meta)
    mark = time.perf_counter()
  ckpt.close()

  # The summary of each run.
  summaries = []
  for run in runs:
    if not run.last_train:  # the run was already finished: report what its log says
      run.recover_logged()
    summary = {f"train/{k}": v for k, v in run.last_train.items()}
    for split, m in run.last_eval.items():
      summary.update({f"{split}/{k}": v for k, v in m.items()})
    summary.update(
        step=total, attention=config.model.attention, num_params=n_params,
        steps_per_second=(meta["timed_steps"] / meta["train_seconds"]
                          if meta["train_seconds"] else None),
        seeds_in_program=len(runs), compile_seconds=compile_seconds,
        wall_seconds=meta["wall_seconds"] + time.perf_counter() - wall_start,
        # Host time spent making batches, as a share of training time (an upper bound on
        # the time the device waited: batches are made while the previous step runs).
        data_wait_fraction=(meta["data_seconds"] / meta["train_seconds"]
                            if meta["train_seconds"] else None),
        devices=jax.device_count(), platform=jax.devices()[0].platform)
    (run.workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.writer.info(f"done {run.workdir}: "
                    f"{json.dumps({k: v for k, v in summary.items() if '/' in k})}")
    run.writer.close()
    summaries.append(summary)
  return summaries
