"""Tasks: what a model's outputs are scored against. Selected by `config.task`.

A task offers pure functions the trainer jits:
  loss(model, batch, *, train, rngs) -> (scalar loss, dict of scalar metrics)
  eval_sums(model, batch) -> dict of summed statistics over the batch
and host-side:
  finalize(sums) -> dict of metrics for one evaluation split
  host_eval(model, dataset, split) -> dict of extra metrics (e.g. BLEU from decoding), or {}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metricattn.errors import UserError


def _classify(model, batch, *, train: bool, rngs):
  kwargs = {"mask": batch["mask"]} if "mask" in batch else {}
  return model(batch["x"], train=train, rngs=rngs, **kwargs)


class Classification:
  """Softmax cross-entropy classification; batches hold `x`, `y`, optional `weight`, `mask`."""

  def loss(self, model, batch, *, train: bool = True, rngs=None):
    logits = _classify(model, batch, train=train, rngs=rngs)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["y"])
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
    loss = jnp.mean(losses)
    return loss, {"loss": loss, "accuracy": acc}

  def eval_sums(self, model, batch):
    logits = _classify(model, batch, train=False, rngs=None).astype(jnp.float32)
    w = batch.get("weight", jnp.ones(batch["y"].shape, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    correct = (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32)
    return {"loss": jnp.sum(w * losses), "correct": jnp.sum(w * correct), "count": jnp.sum(w)}

  def finalize(self, sums):
    n = max(sums["count"], 1.0)
    return {"loss": sums["loss"] / n, "accuracy": sums["correct"] / n}

  def host_eval(self, model, dataset, split):
    del model, dataset, split
    return {}


def get_task(config):
  name = config.get("task", "classification")
  if name == "classification":
    return Classification()
  raise UserError(f"unknown task {name!r}; allowed: classification")
