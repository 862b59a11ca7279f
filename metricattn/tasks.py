"""Tasks: what a model's outputs are scored against. Selected by `config.task`.

A task offers pure functions the trainer jits:
  loss(model, batch, *, train, rngs) -> (scalar loss, dict of scalar metrics)
  eval_sums(model, batch) -> dict of summed statistics over the batch
and host-side:
  finalize(sums) -> dict of metrics for one evaluation split
  host_eval(model, dataset, split) -> dict of extra metrics (e.g. BLEU from decoding), or {}
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metricattn.errors import UserError


# Batch entries a classifier takes besides `x`: a set mask (IPN), or a graph and the faces
# whose labels are predicted (mesh segmentation).
MODEL_INPUTS = ("mask", "receivers", "senders", "faces")


def _classify(model, batch, *, train: bool, rngs):
  kwargs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
  return model(batch["x"], train=train, rngs=rngs, **kwargs)


class Classification:
  """Softmax cross-entropy classification; batches hold `x`, `y`, optional `weight`, `mask`."""

  def loss(self, model, batch, *, train: bool = True, rngs=None):
    logits = _classify(model, batch, train=train, rngs=rngs)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["y"])
    correct = jnp.argmax(logits, -1) == batch["y"]
    if "weight" in batch:  # padded targets (meshes of different sizes) weigh 0
      w = batch["weight"] / jnp.maximum(jnp.sum(batch["weight"]), 1.0)
      loss, acc = jnp.sum(w * losses), jnp.sum(w * correct)
    else:
      acc, loss = jnp.mean(correct), jnp.mean(losses)
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


def token_terms(logits: jax.Array, targets: jax.Array,
                smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-token (training loss, negative log-likelihood, correct) [b, T] from logits
  [b, T, V]. With label smoothing s the loss's target is (1 - s) one-hot + s uniform over the
  vocabulary; without, the loss is the nll. "correct" is 1.0 where the target's logit is the
  largest (the argmax's hit; ties, which float logits do not reach in practice, count).

  Values are those of `jax.nn.log_softmax` and a gather: nll = log sum exp(x - max) -
  (x_target - max). The target is picked by a one-hot select and a sum (exact zeros added to
  one value), not a gather, and the gradient is one fused pass, softmax(x) - target
  distribution (a custom VJP): on a CPU the gather's scatter, argmax's variadic reduction and
  autodiff's extra [b, T, V] passes cost more than the rest of the loss
  (scripts/bench_transformer.py).
  """
  return _token_terms(logits.astype(jnp.float32), targets, float(smoothing))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _token_terms(logits, targets, smoothing):
  return _token_terms_fwd(logits, targets, smoothing)[0]


def _token_terms_fwd(logits, targets, smoothing):
  shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
  lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
  hit = jnp.arange(logits.shape[-1]) == targets[..., None]
  target = jnp.sum(jnp.where(hit, shifted, 0.0), axis=-1)
  nll = lse[..., 0] - target
  correct = (target >= 0.0).astype(jnp.float32)  # x_target - max is 0 exactly at the max
  loss = nll
  if smoothing:
    loss = (1.0 - smoothing) * nll - smoothing * jnp.mean(shifted - lse, axis=-1)
  return (loss, nll, correct), (shifted, lse, targets)


def _token_terms_bwd(smoothing, res, g):
  shifted, lse, targets = res
  g_loss, g_nll, _ = g
  probs = jnp.exp(shifted - lse)
  hit = jnp.arange(shifted.shape[-1]) == targets[..., None]
  onehot = hit.astype(jnp.float32)
  smooth = (1.0 - smoothing) * onehot + smoothing / shifted.shape[-1] if smoothing else onehot
  d = g_loss[..., None] * (probs - smooth) + g_nll[..., None] * (probs - onehot)
  return d, None


_token_terms.defvjp(_token_terms_fwd, _token_terms_bwd)


def token_losses(logits: jax.Array, targets: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Per-token training loss [b, T] (see `token_terms`)."""
  return token_terms(logits, targets, smoothing)[0]


class Translation:
  """Token cross-entropy for an encoder-decoder; BLEU from decoding on the host.

  Batches hold int32 `src`, `tgt_in`, `tgt_out` (0 = padding, not scored). Training loss is
  label-smoothed; evaluation loss is the plain per-token negative log-likelihood, so
  perplexity = exp(loss). host_eval decodes the split (greedy for beam_size 1, else beam
  search, with the key/value cache) and scores sacrebleu corpus BLEU (default 13a
  tokenisation) and chrF of the detokenised output against the raw references.

  Config fields read (suggested defaults):
    model.label_smoothing  0.0 (the reference) or 0.1
    eval.beam_size         1 (greedy) or 4
    eval.length_penalty    GNMT alpha for choosing among beams; 0 = raw log-prob   0.6
    eval.max_decode_len    tokens to generate; 0 = the dataset's tgt_len           0
  """

  def __init__(self, config):
    self.smoothing = float(config.model.label_smoothing)
    self.beam_size = int(config.eval.beam_size)
    self.length_penalty = float(config.eval.length_penalty)
    self.max_decode_len = int(config.eval.max_decode_len)
    if not 0.0 <= self.smoothing < 1.0:
      raise UserError(f"model.label_smoothing must be in [0, 1); got {self.smoothing}")
    if self.beam_size < 1:
      raise UserError(f"eval.beam_size must be at least 1; got {self.beam_size}")

  def loss(self, model, batch, *, train: bool = True, rngs=None):
    logits = model(batch["src"], batch["tgt_in"], train=train, rngs=rngs)
    mask = (batch["tgt_out"] != 0).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    smoothed, nll, acc = token_terms(logits, batch["tgt_out"], self.smoothing)
    loss = jnp.sum(mask * smoothed) / count
    return loss, {"loss": loss, "nll": jnp.sum(mask * nll) / count,
                  "token_accuracy": jnp.sum(mask * acc) / count}

  def eval_sums(self, model, batch):
    logits = model(batch["src"], batch["tgt_in"], train=False, rngs=None)
    mask = (batch["tgt_out"] != 0).astype(jnp.float32)
    _, nll, acc = token_terms(logits, batch["tgt_out"])
    return {"nll": jnp.sum(mask * nll), "correct": jnp.sum(mask * acc), "tokens": jnp.sum(mask)}

  def finalize(self, sums):
    n = max(sums["tokens"], 1.0)
    loss = sums["nll"] / n
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "token_accuracy": sums["correct"] / n}

  def translate(self, model, dataset, split) -> list[str]:
    """Detokenised decoder output for every example of `split`, in order."""
    from metricattn.models.decoding import decode
    info = dataset.info
    max_len = self.max_decode_len or info["tgt_len"]
    hyps = []
    for batch in dataset.eval_batches(split):
      out = np.asarray(decode(model, batch["src"], bos_id=info["bos_id"],
                              eos_id=info["eos_id"], max_len=max_len,
                              beam_size=self.beam_size, length_penalty=self.length_penalty))
      hyps += [dataset.detokenize(row) for row, w in zip(out, batch["weight"]) if w > 0]
    return hyps

  def host_eval(self, model, dataset, split):
    import sacrebleu
    hyps = self.translate(model, dataset, split)
    refs = [dataset.references(split)]
    return {"bleu": sacrebleu.corpus_bleu(hyps, refs).score,
            "chrf": sacrebleu.corpus_chrf(hyps, refs).score}


TASKS = ("classification", "translation")


def get_task(config):
  name = config.get("task", "classification")
  if name == "classification":
    return Classification()
  if name == "translation":
    return Translation(config)
  raise UserError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
