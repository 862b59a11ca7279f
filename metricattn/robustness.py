"""Accuracy of trained classifiers under input noise and L-infinity attacks (beyond the paper).

  python -m metricattn.robustness --workdir=RUN          # one run: RUN/robustness.json
  python -m metricattn.robustness --workdir=ROOT         # every run below ROOT, then
                                                         # ROOT/robustness.{json,md,png}

The paper's "robustness" is the spread of accuracy over seeds; this adds (a) Gaussian input
noise of standard deviation sigma and (b) FGSM and PGD attacks of L-infinity radius eps, both
computed with jax.grad of the cross-entropy with respect to the input.

Units: for image datasets sigma and eps are in pixel units, the pixel range scaled to
[0, 1] (eps 0.1 = 25.5/255); the model sees normalised inputs `(pixel - mean) / std`, so a
pixel perturbation d enters the model as d / std, and perturbed images are clipped to the
valid pixel range. For the Moon data (no pixels) they are in input coordinates, unclipped.

Set models (the IPN, eval.mode train_context or batch): only the evaluated points (weight
> 0) are perturbed; the training context the model attends to is left clean. With
train_context each evaluated point sees only itself and the context, so this is an attack
on each point alone.

FGSM: x + eps * sign(grad). PGD: `--pgd-steps` steps of size 2.5 eps / steps from the clean
input (no random start, so it is deterministic and its first step points where FGSM does),
each projected onto the eps-ball and the valid range. Noise draws are seeded per batch and
the same draw is scaled for every sigma.

The checkpoint is the run's latest: RUN/checkpoints, or for seeds trained vmapped in one
program (`--seeds`, `sweep --vmap-seeds`) the stacked checkpoint in RUN/../checkpoints,
whose slice i belongs to the i-th smallest seed=N sibling. The clean accuracy is checked
against the run's summary.json when the checkpoint is the final one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from metricattn.errors import UserError

ATTACKS = ("noise", "fgsm", "pgd")
SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class Settings:
  split: str = "test"
  sigmas: tuple[float, ...] = SIGMAS
  epsilons: tuple[float, ...] = EPSILONS
  pgd_steps: int = 10
  max_examples: int = 0      # 0 = the whole split
  noise_seed: int = 0


@dataclasses.dataclass(frozen=True)
class InputSpace:
  """Pixel units -> model-input units (`scale`) and the valid model-input range."""
  scale: np.ndarray
  lo: np.ndarray
  hi: np.ndarray
  units: str


def input_space(config) -> InputSpace:
  from metricattn.data.images import SPECS
  name = config.data.name
  if name in SPECS:
    mean, std = (np.asarray(v, np.float32) for v in (SPECS[name].mean, SPECS[name].std))
    return InputSpace(1 / std, -mean / std, (1 - mean) / std,
                      "pixel units (pixel range scaled to [0, 1]), clipped to it")
  inf = np.float32(np.inf)
  return InputSpace(np.float32(1.0), -inf, inf, "input coordinates (no clipping)")


# ---------------------------------------------------------------- attacks (jitted)

def _logits(graphdef, params, x, batch):
  model = nnx.merge(graphdef, params)
  kwargs = {"mask": batch["mask"]} if "mask" in batch else {}
  return model(x, train=False, rngs=None, **kwargs).astype(jnp.float32)


def _weight(batch):
  return batch.get("weight", jnp.ones(batch["y"].shape, jnp.float32))


def _loss(x, graphdef, params, batch):
  """Summed cross-entropy of the evaluated points, as a function of the input x."""
  ce = optax.softmax_cross_entropy_with_integer_labels(_logits(graphdef, params, x, batch),
                                                       batch["y"])
  return jnp.sum(_weight(batch) * ce)


def _correct(graphdef, params, x, batch):
  hit = jnp.argmax(_logits(graphdef, params, x, batch), -1) == batch["y"]
  return jnp.sum(_weight(batch) * hit)


def _valid(x0, x, batch, space):
  """Perturbs only evaluated points (weight > 0) and keeps them in the valid range."""
  _, lo, hi = space
  attacked = (_weight(batch) > 0).reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.where(attacked, jnp.clip(x, lo, hi), x0)


def _grad(x, graphdef, params, batch):
  return jax.grad(_loss)(x, graphdef, params, batch)


def clean(graphdef, params, batch, space, strength, key, pgd_steps):
  """Correct evaluated points on the unperturbed batch."""
  del space, strength, key, pgd_steps
  return _correct(graphdef, params, batch["x"], batch)


def noise(graphdef, params, batch, space, strength, key, pgd_steps):
  """Gaussian noise of std `strength` (pixel units) on the evaluated points."""
  del pgd_steps
  x0 = batch["x"]
  x = x0 + strength * space[0] * jax.random.normal(key, x0.shape, x0.dtype)
  return _correct(graphdef, params, _valid(x0, x, batch, space), batch)


def fgsm(graphdef, params, batch, space, strength, key, pgd_steps):
  """One signed-gradient step of L-infinity size `strength`."""
  del key, pgd_steps
  x0 = batch["x"]
  x = x0 + strength * space[0] * jnp.sign(_grad(x0, graphdef, params, batch))
  return _correct(graphdef, params, _valid(x0, x, batch, space), batch)


def pgd(graphdef, params, batch, space, strength, key, pgd_steps):
  """`pgd_steps` signed-gradient steps of 2.5 strength / pgd_steps, projected each time."""
  del key
  x0 = batch["x"]
  radius, alpha = strength * space[0], 2.5 * strength * space[0] / pgd_steps

  def step(_, x):
    x = x + alpha * jnp.sign(_grad(x, graphdef, params, batch))
    return _valid(x0, jnp.clip(x, x0 - radius, x0 + radius), batch, space)

  x = jax.lax.fori_loop(0, pgd_steps, step, x0)
  return _correct(graphdef, params, x, batch)


ATTACK_FNS = {"clean": clean, "noise": noise, "fgsm": fgsm, "pgd": pgd}


@functools.cache
def attack_fn(name: str):
  """The jitted attack `name`: (graphdef, params, batch, space, strength, key, pgd_steps)
  -> number of correct evaluated points; `space` is (scale, lo, hi) of InputSpace.
  Compiled once per model shape and batch shape, so the seeds of a kind share it."""
  return jax.jit(ATTACK_FNS[name], static_argnames=("graphdef", "pgd_steps"))


def evaluate_attacks(params, graphdef, data, config, settings: Settings) -> dict:
  """Accuracy per attack and strength on `settings.split` (first max_examples points)."""
  if settings.split not in data.splits:
    raise UserError(f"unknown split {settings.split!r}; this dataset has "
                    f"{', '.join(data.splits)}")
  space = input_space(config)
  space_args = tuple(np.asarray(v, np.float32) for v in (space.scale, space.lo, space.hi))
  strengths = {"noise": settings.sigmas, "fgsm": settings.epsilons, "pgd": settings.epsilons}
  hits = {a: np.zeros(len(s)) for a, s in strengths.items()}
  total, correct, base = 0.0, 0.0, jax.random.key(settings.noise_seed)
  subset = False
  for i, batch in enumerate(data.eval_batches(settings.split)):
    if settings.max_examples and total >= settings.max_examples:
      subset = True
      break
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    total += float(np.sum(batch["weight"])) if "weight" in batch else len(batch["y"])
    common = dict(graphdef=graphdef, params=params, batch=batch, space=space_args,
                  key=jax.random.fold_in(base, i), pgd_steps=settings.pgd_steps)
    correct += float(attack_fn("clean")(strength=np.float32(0), **common))
    for a, values in strengths.items():
      for j, s in enumerate(values):
        hits[a][j] += float(attack_fn(a)(strength=np.float32(s), **common))
  return {"split": settings.split, "examples": int(total), "subset": subset,
          "units": space.units,
          "clean_accuracy": correct / total,
          "pgd_steps": settings.pgd_steps, "pgd_step_size": "2.5 eps / pgd_steps",
          **{a: [[float(s), float(h / total)] for s, h in zip(strengths[a], hits[a])]
             for a in ATTACKS}}


# ---------------------------------------------------------------- checkpoints

def stacked_index(workdir: Path, seed: int, n: int) -> int:
  """Position of `seed` in a program of `n` vmapped seeds: its rank among the seed=N siblings."""
  seeds = sorted(int(p.name.split("=", 1)[1]) for p in workdir.parent.glob("seed=*")
                 if (p / "config.json").exists())
  if len(seeds) != n or seed not in seeds:
    raise UserError(f"{workdir.parent / 'checkpoints'} holds {n} vmapped seeds but "
                    f"{workdir.parent} has seed directories {seeds}: cannot tell which slice "
                    f"is seed {seed}")
  return seeds.index(seed)


def restore_run(workdir: Path):
  """(config, data, graphdef, params, step) of a run's latest checkpoint."""
  from metricattn.checkpoint import Checkpointer
  from metricattn.evaluate import load_config
  from metricattn.optim import make_optimizer
  from metricattn.train import build

  config = load_config(workdir)
  if config.get("task", "classification") != "classification":
    raise UserError(f"{workdir} is a {config.task} run; robustness needs a classifier")
  data, _, graphdef, params = build(config)
  tx = make_optimizer(config)
  own = workdir / "checkpoints"
  if own.is_dir():
    ckpt, n = Checkpointer(workdir, config.train.keep_checkpoints), 0
  elif (workdir.parent / "checkpoints").is_dir():
    ckpt = Checkpointer(workdir.parent, config.train.keep_checkpoints)
    summary = json.loads((workdir / "summary.json").read_text())
    n = int(summary.get("seeds_in_program", 1))
    params = jax.tree.map(lambda x: np.broadcast_to(x, (n, *x.shape)).copy(), params)
  else:
    raise UserError(f"{workdir} has no checkpoint (neither {own} nor ../checkpoints)")
  step = ckpt.latest_step()
  if step is None:
    raise UserError(f"{ckpt.directory} holds no checkpoint")
  params = ckpt.restore_params(step, params, tx, stacked=bool(n))
  ckpt.close()
  if n:
    i = stacked_index(workdir, int(config.seed), n)
    params = jax.tree.map(lambda x: x[i], params)
  return config, data, graphdef, params, step


def check_clean(workdir: Path, result: dict) -> None:
  """Warns when the clean accuracy differs from the run's own final evaluation."""
  path = workdir / "summary.json"
  if not path.exists():
    return
  summary = json.loads(path.read_text())
  logged = summary.get(f"{result['split']}/accuracy")
  if logged is None or summary.get("step") != result["step"] or result["subset"]:
    return
  result["summary_accuracy"] = logged
  if abs(logged - result["clean_accuracy"]) > 0.5 / result["examples"] + 1e-6:
    print(f"warning: {workdir}: clean accuracy {result['clean_accuracy']:.4f} differs from "
          f"the run's logged {logged:.4f}", file=sys.stderr)


def evaluate_run(workdir: Path, settings: Settings, force: bool = False) -> dict:
  """Writes and returns WORKDIR/robustness.json (reused when its settings match)."""
  out = workdir / "robustness.json"
  wanted = dataclasses.asdict(settings)
  if out.exists() and not force:
    old = json.loads(out.read_text())
    summary = workdir / "summary.json"
    step = json.loads(summary.read_text()).get("step") if summary.exists() else None
    if old.get("settings") == json.loads(json.dumps(wanted)) and old.get("step") == step:
      return old  # same settings, same final checkpoint
  config, data, graphdef, params, step = restore_run(workdir)
  result = {"workdir": str(workdir), "step": step, "seed": int(config.seed),
            "attention": config.model.attention, "settings": wanted,
            **evaluate_attacks(params, graphdef, data, config, settings)}
  check_clean(workdir, result)
  out.write_text(json.dumps(result, indent=2) + "\n")
  return result


# ---------------------------------------------------------------- many runs

def find_runs(root: Path) -> list[Path]:
  """Finished classification runs below root (directories with config.json + summary.json)."""
  runs = []
  for path in sorted(root.rglob("summary.json")):
    config = json.loads((path.parent / "config.json").read_text())
    if config.get("task", "classification") == "classification":
      runs.append(path.parent)
  return runs


def group_name(root: Path, workdir: Path) -> str:
  parts = [p for p in workdir.relative_to(root).parts if not p.startswith("seed=")]
  return "/".join(parts) or "."


def aggregate(root: Path, results: list[dict]) -> dict:
  """group -> attack -> [(strength, accuracies over seeds)]."""
  groups: dict[str, list[dict]] = {}
  for r in results:
    groups.setdefault(group_name(root, Path(r["workdir"])), []).append(r)
  return {name: {a: [(rs[0][a][j][0], [r[a][j][1] for r in rs])
                     for j in range(len(rs[0][a]))] for a in ATTACKS}
          for name, rs in sorted(groups.items())}


def table(agg: dict, attack: str, label: str) -> list[str]:
  names = list(agg)
  lines = [f"| {label} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  strengths = [s for s, _ in agg[names[0]][attack]]
  for j, s in enumerate(strengths):
    cells = []
    for n in names:
      accs = np.asarray(agg[n][attack][j][1])
      cells.append(f"{accs.mean():.4f} ± {accs.std(ddof=1) if len(accs) > 1 else 0.0:.4f}")
    lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
  return lines


def labels(settings: Settings) -> list[tuple[str, str]]:
  return [("noise", "sigma"), ("fgsm", "FGSM eps"), ("pgd", f"PGD-{settings.pgd_steps} eps")]


def write_root(root: Path, results: list[dict], settings: Settings) -> str:
  """ROOT/robustness.json, robustness.md (tables) and robustness.png; returns the markdown."""
  from metricattn import plots
  agg = aggregate(root, results)
  units = results[0]["units"]
  panels = [("noise", f"Gaussian noise sigma ({units.split(' (')[0]})"),
            ("fgsm", "FGSM eps (L-inf)"), ("pgd", f"PGD-{settings.pgd_steps} eps (L-inf)")]
  plots.plot_strengths(agg, panels, root / "robustness.png", f"robustness: {root}")
  n = results[0]["examples"]
  lines = ["# Robustness", "",
           f"Accuracy on the first {n} examples of the `{settings.split}` split under "
           f"Gaussian input noise and FGSM / PGD-{settings.pgd_steps} L-infinity attacks "
           f"(`python -m metricattn.robustness --workdir={root}`); strengths in {units}. "
           "Mean ± std over seeds; only evaluated points are perturbed.", ""]
  for attack, label in labels(settings):
    lines += table(agg, attack, label) + [""]
  lines += ["![accuracy against noise and attack strength](robustness.png)", ""]
  text = "\n".join(lines)
  (root / "robustness.md").write_text(text)
  (root / "robustness.json").write_text(json.dumps(
      {"settings": dataclasses.asdict(settings), "units": units, "groups": agg}, indent=2) + "\n")
  return text


def run(workdir: Path, settings: Settings, force: bool = False) -> str:
  """One run (WORKDIR/config.json exists) or every run below a root; returns a summary."""
  if (workdir / "config.json").exists():
    r = evaluate_run(workdir, settings, force)
    agg = {r["attention"]: next(iter(aggregate(workdir.parent, [r]).values()))}
    lines = [f"{workdir}: clean accuracy {r['clean_accuracy']:.4f} on {r['examples']} "
             f"`{r['split']}` examples; strengths in {r['units']}", ""]
    for attack, label in labels(settings):
      lines += table(agg, attack, label) + [""]
    return "\n".join(lines) + f"wrote {workdir / 'robustness.json'}"
  runs = find_runs(workdir)
  if not runs:
    raise UserError(f"{workdir} holds no finished classification run (config.json and "
                    "summary.json)")
  results = []
  for i, w in enumerate(runs, 1):
    results.append(evaluate_run(w, settings, force))
    print(f"[{i}/{len(runs)}] {w}: clean {results[-1]['clean_accuracy']:.4f}", flush=True)
  return write_root(workdir, results, settings)


def floats(text: str) -> tuple[float, ...]:
  return tuple(float(v) for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, type=Path, help="a run, or a root of runs")
  p.add_argument("--split", default="test")
  p.add_argument("--sigmas", type=floats, default=SIGMAS, help="comma-separated")
  p.add_argument("--eps", type=floats, default=EPSILONS, help="comma-separated")
  p.add_argument("--pgd-steps", type=int, default=10)
  p.add_argument("--max-examples", type=int, default=0, help="0 = the whole split")
  p.add_argument("--force", action="store_true", help="recompute existing robustness.json")
  a = p.parse_args(argv)
  settings = Settings(a.split, a.sigmas, a.eps, a.pgd_steps, a.max_examples)
  from metricattn.cli import enable_compilation_cache
  enable_compilation_cache()
  try:
    if a.pgd_steps < 1 or not a.sigmas or not a.eps:
      raise UserError("need --pgd-steps >= 1 and at least one sigma and one eps")
    print(run(a.workdir, settings, a.force))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
