"""The one trainer: `train_and_evaluate(config, workdir) -> summary dict`.

Read top to bottom: config checks, devices, the jitted step, evaluation, the run (data,
model, optimizer, checkpoint restore, the loop: feed, step, log, evaluate, checkpoint; the
summary). The step's data (device-resident arrays and index blocks, or host batches) comes
from `metricattn.feeder`.

`train_seeds(config, seeds, root)` runs the same loop for several seeds of one config in a
single compiled program: the step maps over a leading seed axis (vmapped, or one copy per
seed: `train.stacked_seeds`, metricattn/feeder.py `over_seeds`). Each seed gets the
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
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from metricattn import multihost, runs as runs_lib
from metricattn.attention.layer import attention_name
from metricattn.checkpoint import Checkpointer, DiskFull, saved_steps
from metricattn.data import get_dataset
from metricattn.errors import Interrupted, UserError
from metricattn.feeder import Feeder, shard_batch, stack_batches, stack_trees
from metricattn.models import build_model, num_params
from metricattn.optim import Plateau, make_optimizer
from metricattn.tasks import get_task
from metricattn.fileio import NoSpace, full_disk_path, read_jsonl, write_atomic
from metricattn.validation import check_values
from metricattn.writers import MetricWriter


class TrainingDiverged(UserError):
  """Loss or gradient became NaN/inf."""


class Signals:
  """While active (main thread only): SIGINT and SIGTERM ask the loop to stop after the
  current step; a second SIGINT stops at once (KeyboardInterrupt), unless the stop's
  checkpoint is written by then (`saved`): the run is ending anyway and says so."""

  def __init__(self):
    self.received = None
    self.saved = False
    self.old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self.old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    return self

  def handle(self, signum, frame):
    if self.received is not None and signum == signal.SIGINT and not self.saved:
      raise KeyboardInterrupt
    self.received = signum

  def __exit__(self, *exc):
    for s, handler in self.old.items():
      signal.signal(s, handler)


# ---------------------------------------------------------------- config checks

def check_config(config, split_batch: bool = True) -> None:
  """Every value in its range (`validation.check_values`), and the batch divisible over the
  devices when `split_batch`."""
  check_values(config)
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


# ---------------------------------------------------------------- the step

# Parameter initialisation draws fold_in(key(seed), n) for its n-th draw (nnx.Rngs); dropout
# gets a stream of its own, the last fold_in index, which no initialisation reaches.
DROPOUT_STREAM = 2**32 - 1


def dropout_key(seed: int) -> jax.Array:
  """The base key of a run's dropout; step t uses fold_in(dropout_key(seed), t)."""
  return jax.random.fold_in(jax.random.key(seed), DROPOUT_STREAM)


def make_train_step(graphdef, task, tx):
  """Pure step: (params, opt_state, batch, step, key, lr_scale) -> (params, opt_state, metrics).

  `key` is the run's dropout key (`dropout_key`; step t uses fold_in(key, t)); `lr_scale`
  multiplies the update (ReduceLROnPlateau). A step whose loss or gradient is not finite leaves the state
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
    batch = stack_batches(batches) if stacked else batches[0]
    out = multihost.to_host(eval_step(params, shard_batch(batch, sharding)))
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


class Programs:
  """The jitted train step compiled ahead of time, lazily, once per shape of its data
  arguments (one shape, or one per pair of translation length buckets); `seconds` is the sum
  of the compile times."""

  def __init__(self, jitted):
    self.jitted, self.compiled, self.seconds = jitted, {}, 0.0

  def get(self, params, opt_state, batch: tuple, step: int, key):
    shapes = tuple(x.shape for x in jax.tree.leaves(batch))
    if shapes not in self.compiled:
      t = time.perf_counter()
      self.compiled[shapes] = self.jitted.lower(params, opt_state, *batch, jnp.int32(step), key,
                                                jnp.float32(1.0)).compile()
      self.seconds += time.perf_counter() - t
    return self.compiled[shapes]


# ---------------------------------------------------------------- the run

class Run:
  """Host-side bookkeeping of one seed: its data, writer, logging window and last metrics."""

  def __init__(self, config, workdir: Path, data, meta: dict, total: int, start: int,
               progress: bool):
    self.config, self.workdir, self.data = config, workdir, data
    self.window = {k: float(v) for k, v in meta.get("window", {}).items()}
    self.window_steps = meta.get("window_steps", 0)
    self.writer = MetricWriter(workdir, config, total, start, progress,
                               active=multihost.primary())
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

  def finish(self, summary: dict) -> None:
    """Writes summary.json (process 0), logs the final metrics and closes the writer."""
    if multihost.primary():
      write_atomic(self.workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    self.writer.info(f"done {self.workdir}: "
                     f"{json.dumps({k: v for k, v in summary.items() if '/' in k})}")
    self.writer.close()


def add_metrics(runs: list[Run], host: list[dict], step: int, stacked: bool, ckpt) -> None:
  """Adds the host copies of the metrics of the steps up to `step` to each run's window;
  stops on a step whose loss or gradient is NaN/inf."""
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


def summarize(run: Run, meta: dict, n_params: int, seeds_in_program: int,
              compile_seconds: float, wall_seconds: float) -> dict:
  """The summary.json of a run: its last metrics, the program's shape and its timings."""
  if not run.last_train:  # the run was already finished: report what its log says
    run.recover_logged()
  summary = {f"train/{k}": v for k, v in run.last_train.items()}
  for split, m in run.last_eval.items():
    summary.update({f"{split}/{k}": v for k, v in m.items()})
  summary.update(
      step=int(run.config.train.steps), attention=attention_name(run.config.model),
      num_params=n_params,
      steps_per_second=(meta["timed_steps"] / meta["train_seconds"]
                        if meta["train_seconds"] else None),
      seeds_in_program=seeds_in_program, compile_seconds=compile_seconds,
      wall_seconds=wall_seconds,
      # Host time spent making batches, as a share of training time (an upper bound on
      # the time the device waited: batches are made while the previous step runs).
      data_wait_fraction=(meta["data_seconds"] / meta["train_seconds"]
                          if meta["train_seconds"] else None),
      devices=jax.device_count(), processes=jax.process_count(),
      platform=jax.devices()[0].platform)
  return summary


def prepare_workdir(config, workdir: Path):
  """Creates the workdir (one-line errors when it cannot be); a run-local tokenizer lives
  there. config.json is written only once the resume checks have passed."""
  runs_lib.make_workdir(workdir)
  if "tokenizer_dir" in config.data and not config.data.tokenizer_dir:
    config.data.tokenizer_dir = str(workdir)


def train_and_evaluate(config, workdir: str | Path, allow_config_change: bool = False) -> dict:
  """Trains one run in `workdir` (resuming from its checkpoint) and returns its summary.

  Resuming with changed settings is refused (see `runs.check_resume`) unless
  `allow_config_change`."""
  return _train([config], [Path(workdir)], Path(workdir), False, allow_config_change)[0]


def train_seeds(config, seeds: list[int], root: str | Path,
                allow_config_change: bool = False) -> list[dict]:
  """Trains `seeds` of `config` vmapped in one program; workdirs ROOT/seed=N."""
  configs = []
  for s in seeds:
    c = copy.deepcopy(config)
    c.seed = s
    configs.append(c)
  root = Path(root)
  return _train(configs, [runs_lib.seed_dir(root, s) for s in seeds], root, True, allow_config_change)


def _train(configs, workdirs: list[Path], ckpt_dir: Path, stacked: bool,
           allow_config_change: bool) -> list[dict]:
  """Checks, then trains while holding the workdir lock (one run per workdir)."""
  check_config(configs[0], split_batch=not (stacked and seeds_split_over_devices(len(configs))))
  created = not ckpt_dir.exists()
  runs_lib.make_workdir(ckpt_dir)
  lock = None
  try:
    lock = lock_workdir(ckpt_dir)  # a full disk can stop even this first write
    with Signals() as signals:
      return _train_locked(configs, workdirs, ckpt_dir, stacked, allow_config_change, signals)
  except OSError as e:  # metrics.jsonl, config.json, summary.json
    if full_disk_path(e) is None:
      raise
    raise DiskFull(e.filename or ckpt_dir, saved_steps(ckpt_dir)) from None
  except NoSpace as e:  # a tokenizer, a data cache: say which checkpoints are intact
    if isinstance(e, DiskFull):
      raise
    raise DiskFull(e.path, saved_steps(ckpt_dir)) from None
  finally:
    if lock is not None:
      lock.release()
    if created and multihost.primary() and {p.name for p in ckpt_dir.iterdir()} <= {".lock"}:
      # A start that failed before writing anything leaves no workdir behind.
      (ckpt_dir / ".lock").unlink(missing_ok=True)
      ckpt_dir.rmdir()


def lock_workdir(ckpt_dir: Path) -> runs_lib.Lock | None:
  """The workdir lock, taken by process 0 alone for all the processes of the run (None on
  the others); when it is held by another run, every process fails."""
  lock, error = None, None
  if multihost.primary():
    try:
      lock = runs_lib.Lock(ckpt_dir)
    except UserError as e:
      error = e
  if multihost.from_primary(error is not None):
    raise error or UserError(f"{ckpt_dir} is in use by another run (see process 0)")
  return lock


def _train_locked(configs, workdirs: list[Path], ckpt_dir: Path, stacked: bool,
                  allow_config_change: bool, signals: Signals) -> list[dict]:
  wall_start = time.perf_counter()
  config = configs[0]  # everything but the seed is shared
  by_seed = stacked and seeds_split_over_devices(len(configs))
  for c, w in zip(configs, workdirs):
    prepare_workdir(c, w)
  total = int(config.train.steps)

  mesh = make_mesh()
  # State and evaluation batches: replicated, or split along the seed axis.
  state_sharding = NamedSharding(mesh, P("data") if by_seed else P())

  built = [build(c) for c in configs]
  datas = [b[0] for b in built]
  _, task, graphdef, _ = built[0]
  params = stack_trees([b[3] for b in built]) if stacked else built[0][3]
  tx = make_optimizer(config)
  params = jax.tree.map(lambda x: multihost.put(x, state_sharding), params)
  opt_state = jax.jit(jax.vmap(tx.init) if stacked else tx.init,
                      out_shardings=state_sharding)(params)
  seeds = [c.seed for c in configs]
  key = (jax.jit(lambda: jax.vmap(dropout_key)(jnp.array(seeds)), out_shardings=state_sharding)()
         if stacked else dropout_key(seeds[0]))
  plateau = Plateau(config)
  if stacked and plateau.enabled:
    raise UserError("optimizer.plateau is not supported with vmapped seeds; run seeds "
                    "separately")

  # Restore the newest readable checkpoint, if any, after checking the settings it was
  # written with; only then does config.json describe this run.
  ckpt = Checkpointer(ckpt_dir, config.train.keep_checkpoints, owner=True)
  meta = {"step": 0, "train_seconds": 0.0, "timed_steps": 0, "wall_seconds": 0.0,
          "data_seconds": 0.0, "runs": [{} for _ in configs], "plateau": plateau.state}
  changes = [runs_lib.check_resume(w, c, allow_config_change) if ckpt.latest_step() else []
             for c, w in zip(configs, workdirs)]
  start, state, restored = ckpt.restore_latest({"params": params, "opt_state": opt_state},
                                               say=lambda line: print(line, file=sys.stderr))
  if start:
    params, opt_state = state["params"], state["opt_state"]
    meta.update(restored)
    plateau.state = meta["plateau"]
  multihost.barrier("resume checked")  # every process has read config.json
  for c, w, ch in zip(configs, workdirs, changes):
    if multihost.primary():
      runs_lib.record_changes(w, ch, start)
      write_atomic(w / "config.json", c.to_json(indent=2) + "\n")
  runs = [Run(c, w, d, m, total, start, progress=i == 0)
          for i, (c, w, d, m) in enumerate(zip(configs, workdirs, datas, meta["runs"]))]
  n_params = num_params(params) // (len(configs) if stacked else 1)
  runs[0].writer.info(
      f"{ckpt_dir}: {config.model.name}/{config.model.attention}, {n_params:,} params, "
      f"{len(configs)} seed(s){' vmapped' if stacked else ''}, {jax.device_count()} "
      f"device(s){' (seeds split over them)' if by_seed else ''}"
      f"{f' in {jax.process_count()} processes' if jax.process_count() > 1 else ''}, "
      f"{'resuming at step ' + str(start) if start else 'starting'}")

  feed = Feeder(datas, mesh, state_sharding, stacked, by_seed)
  jitted = jax.jit(feed.step_fn(make_train_step(graphdef, task, tx),
                                config.train.get("stacked_seeds", "vmap")),
                   donate_argnums=(0, 1))
  eval_step = make_eval_step(graphdef, task, stacked)

  # Compile ahead of time so that compile time is measured apart from step time (a shape
  # first met in the loop is compiled there, its time moved out of the step time).
  programs = Programs(jitted)
  if start < total:
    batch = feed(start)
    programs.get(params, opt_state, batch, start, key)

  pending: list[dict] = []  # device metrics since the last host sync
  mark, timed_from = time.perf_counter(), start
  for step in range(start, total):
    if step > start:
      t = time.perf_counter()
      batch = feed(step)
      meta["data_seconds"] += time.perf_counter() - t
    compiling = programs.seconds
    train_step = programs.get(params, opt_state, batch, step, key)
    mark += programs.seconds - compiling
    params, opt_state, metrics = train_step(params, opt_state, *batch, jnp.int32(step), key,
                                            jnp.float32(plateau.scale))
    pending.append(metrics)
    done = step + 1
    runs[0].writer.advance(1)
    is_log = done % config.train.log_every == 0 or done == total
    is_eval = done % config.train.eval_every == 0 or done == total
    is_ckpt = done % config.train.checkpoint_every == 0 or done == total
    received = signals.received
    if jax.process_count() > 1:  # a signal to any process stops all, at a step where they sync
      received = ((multihost.max_over_processes(received or 0) or None)
                  if is_log or is_eval or is_ckpt else None)
    stopping = received is not None and done < total
    if not (is_log or is_eval or is_ckpt or stopping):
      continue
    # Sync: pull the pending metrics to the host and account the step time.
    jax.block_until_ready(params)
    add_metrics(runs, multihost.to_host(pending), done, stacked, ckpt)
    pending = []
    meta["train_seconds"] += time.perf_counter() - mark
    meta["timed_steps"] += done - timed_from
    timed_from = done
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
    if is_ckpt or stopping:
      meta.update(step=done, plateau=plateau.state,
                  runs=[{"window": r.window, "window_steps": r.window_steps} for r in runs],
                  wall_seconds=meta["wall_seconds"] + time.perf_counter() - wall_start)
      wall_start = time.perf_counter()
      ckpt.save(done, {"params": params, "opt_state": opt_state}, meta)
    if stopping:
      ckpt.close()
      signals.saved = True
      for run in runs:
        run.writer.close()
      name = signal.Signals(received).name
      raise Interrupted(f"{name}: stopped at step {done} of {total} with a checkpoint in "
                        f"{ckpt.directory}; rerun the same command to resume",
                        128 + received)
    mark = time.perf_counter()
  ckpt.close()

  summaries = []
  for run in runs:
    summaries.append(summarize(run, meta, n_params, len(runs), programs.seconds,
                               meta["wall_seconds"] + time.perf_counter() - wall_start))
    run.finish(summaries[-1])
  return summaries
