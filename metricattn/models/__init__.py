"""Model families, built from `config.model` by `build_model`. One implementation per family,
each module with `from_config(model_config, data_info, rngs)`."""

from __future__ import annotations

import math

import jax
from flax import nnx

from metricattn.errors import UserError
from metricattn.models import ipn, transformer, transformer_encoder, vit

FAMILIES = {"ipn": ipn, "vit": vit, "transformer": transformer,
            "transformer_encoder": transformer_encoder}


def build_model(config, info: dict, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model named by `config.model.name`; `info` comes from the dataset."""
  name = config.model.name
  if name not in FAMILIES:
    raise UserError(f"unknown model {name!r}; allowed: {', '.join(FAMILIES)}")
  return FAMILIES[name].from_config(config.model, info, rngs)


def num_params(tree) -> int:
  """Number of parameters of a model (its nnx.Param state) or of a pytree of arrays; shared
  arrays counted once."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
