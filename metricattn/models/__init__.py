"""Model families, built from `config.model` by `build_model`. One implementation per family."""

from __future__ import annotations

import math

from flax import nnx

from metricattn.errors import UserError

FAMILIES = ("ipn", "vit", "transformer", "transformer_encoder")


def build_model(config, info: dict, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model named by `config.model.name`; `info` comes from the dataset."""
  m = config.model
  if m.name == "ipn":
    from metricattn.models.ipn import IPN
    return IPN(math.prod(info["input_shape"]), info["num_classes"], width=m.width,
               depth=m.depth, kind=m.attention, num_heads=m.num_heads, qk_dim=m.qk_dim,
               d_mlp=m.d_mlp, scale=m.scale, residual=m.residual, layer_norm=m.layer_norm,
               projections=m.projections, rngs=rngs)
  if m.name == "vit":
    from metricattn.models import vit
    return vit.from_config(m, info, rngs)
  if m.name in ("transformer", "transformer_encoder"):
    from metricattn.models import transformer
    return transformer.from_config(m, info, rngs)
  raise UserError(f"unknown model {m.name!r}; allowed: {', '.join(FAMILIES)}")
