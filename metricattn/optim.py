"""Optimizers from `config.optimizer`, and learning-rate schedules.

Fields:
  name          "adam": L2 weight decay added to the gradient before Adam (PyTorch
                `Adam(weight_decay=...)`, what the paper used); "adamw": decoupled decay.
  lr            peak learning rate.
  weight_decay  decay coefficient (0 disables it).
  b1, b2, eps   Adam moments and epsilon.
  grad_clip     clip the gradient's global norm to this value before anything else (0: off).
  schedule      "constant", "cosine" (decay to 0 over train.steps) or "warmup_cosine".
  warmup_steps  linear warm-up steps for "warmup_cosine".
"""

from __future__ import annotations

import optax

from metricattn.errors import UserError

SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(o, total_steps: int) -> optax.Schedule:
  if o.schedule == "constant":
    return optax.constant_schedule(o.lr)
  if o.schedule == "cosine":
    return optax.cosine_decay_schedule(o.lr, total_steps)
  if o.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps,
                                              max(total_steps, o.warmup_steps + 1))
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
