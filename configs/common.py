"""What the config files share. Not a config: config files load it by path with
`metricattn.config_utils.load_module(Path(__file__).with_name("common.py"))`."""

import ml_collections

from metricattn.errors import UserError


def transformer(attention: str, **sizes) -> dict:
  """`config.model` of the encoder-decoder Transformer (metricattn/models/transformer.py):
  the paper's (configs/multi30k_transformer.py), with `sizes` replacing some of its values."""
  model = dict(name="transformer", attention=attention, num_layers=6, num_heads=8,
               d_model=512, qk_dim=512, d_mlp=512, d_ff=2048, dropout=0.1,
               scale=ml_collections.FieldReference(None, field_type=float), norm="post",
               ln_eps=1e-12, positions="sinusoidal", max_len=256, scale_embeddings=False,
               share_embeddings=False, tie_output=False, label_smoothing=0.0)
  unknown = set(sizes) - set(model)
  if unknown:
    raise UserError(f"unknown Transformer fields {sorted(unknown)}; allowed: {', '.join(model)}")
  return {**model, **sizes}
