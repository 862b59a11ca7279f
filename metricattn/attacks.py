"""Accuracy of a classifier under input noise and L-infinity attacks, in JAX.

`evaluate_attacks(params, graphdef, data, config, settings)` adds to each evaluation batch
(a) Gaussian input noise of standard deviation sigma and (b) FGSM and PGD attacks of
L-infinity radius eps, both computed with jax.grad of the cross-entropy with respect to the
input. `metricattn.robustness` restores runs, runs this and writes tables and figures.

Units: for image datasets sigma and eps are in pixel units, the pixel range scaled to
[0, 1] (eps 0.1 = 25.5/255); the model sees normalised inputs `(pixel - mean) / std`, so a
pixel perturbation d enters the model as d / std, and perturbed images are clipped to the
valid pixel range. For the Moon data (no pixels) they are in input coordinates, unclipped.

Set models (the IPN, eval.mode train_context or batch): only the evaluated points (weight
> 0) are perturbed; the training context the model attends to is left clean. With
train_context each evaluated point sees only itself and the context, so this is an attack
on each point alone.

FGSM: x + eps * sign(grad). PGD: `pgd_steps` steps of size 2.5 eps / steps from the clean
input (no random start, so it is deterministic and its first step points where FGSM does),
each projected onto the eps-ball and the valid range. Noise draws are seeded per batch and
the same draw is scaled for every sigma.
"""

from __future__ import annotations

import dataclasses
import functools

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
  """What `evaluate_attacks` measures: the split, the strengths and the PGD steps."""
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
