"""Optimizers from `config.optimizer`, and learning-rate schedules.

Fields:
  name          "adam": L2 weight decay added to the gradient before Adam (PyTorch
                `Adam(weight_decay=...)`, what the paper used); "adamw": decoupled decay.
  lr            peak learning rate.
  weight_decay  decay coefficient (0 disables it).
  b1, b2, eps   Adam moments and epsilon.
  grad_clip     clip the gradient's global norm to this value before anything else (0: off).
  schedule      "constant", "cosine" (decay to 0 over train.steps), "warmup_cosine" or
                "warmup_rsqrt": lr * min(1, t / w) * sqrt(w / max(t, w)) at step t with
                w = warmup_steps, the peak lr at step w (LRA's "constant * linear_warmup *
                rsqrt_decay" with base rate lr * sqrt(w)).
  warmup_steps  linear warm-up steps for "warmup_cosine" and "warmup_rsqrt".
  plateau       optional ReduceLROnPlateau on an evaluation metric, a dict with
                factor (multiply the learning rate by this; 0 disables), patience
                (evaluations without improvement before reducing), start_step (evaluations
                before this step are ignored: warm-up), split and metric (e.g. "val",
                "loss"; lower is better). Stepped by the trainer after each evaluation;
                its state is checkpointed.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from metricattn.errors import UserError

SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_rsqrt")


def make_schedule(o, total_steps: int) -> optax.Schedule:
  if o.schedule == "constant":
    return optax.constant_schedule(o.lr)
  if o.schedule == "cosine":
    return optax.cosine_decay_schedule(o.lr, total_steps)
  if o.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps,
                                              max(total_steps, o.warmup_steps + 1))
  if o.schedule == "warmup_rsqrt":
    lr, w = float(o.lr), float(o.warmup_steps)
    if w < 1:
      raise UserError(f"optimizer.warmup_steps must be at least 1 for warmup_rsqrt; got {w:g}")
    return lambda t: lr * jnp.minimum(1.0, t / w) * jnp.sqrt(w / jnp.maximum(t, w))
  raise UserError(f"unknown optimizer.schedule {o.schedule!r}; allowed: {', '.join(SCHEDULES)}")


def make_optimizer(config) -> optax.GradientTransformation:
  o = config.optimizer
  if o.lr <= 0:
    raise UserError(f"optimizer.lr must be positive; got {o.lr}")
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
  adam = optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps)
  decay = [optax.add_decayed_weights(o.weight_decay)] if o.weight_decay > 0 else []
  if o.name == "adam":
    parts += decay + [adam]
  elif o.name == "adamw":
    parts += [adam] + decay
  else:
    raise UserError(f"unknown optimizer.name {o.name!r}; allowed: adam, adamw")
  parts.append(optax.scale_by_learning_rate(make_schedule(o, config.train.steps)))
  return optax.chain(*parts)


class Plateau:
  """ReduceLROnPlateau (PyTorch semantics, mode min, relative threshold 1e-4) on the host.

  `scale` multiplies the learning rate; `state` is JSON and goes into checkpoints.
  """

  def __init__(self, config):
    p = config.optimizer.get("plateau")
    self.enabled = bool(p) and p.factor > 0
    self.p = p
    self.state = {"best": None, "bad": 0, "scale": 1.0}

  @property
  def scale(self) -> float:
    return self.state["scale"]

  def update(self, step: int, evals: list[dict]) -> None:
    if not self.enabled or step < self.p.start_step:
      return
    if self.p.split not in evals[0]:
      raise UserError(f"optimizer.plateau.split {self.p.split!r} is not evaluated; "
                      f"evaluated: {', '.join(evals[0])}")
    value = evals[0][self.p.split][self.p.metric]
    s = self.state
    if s["best"] is None or value < s["best"] * (1 - 1e-4):
      s["best"], s["bad"] = value, 0
    else:
      s["bad"] += 1
    if s["bad"] > self.p.patience:
      s["scale"], s["bad"] = s["scale"] * self.p.factor, 0
