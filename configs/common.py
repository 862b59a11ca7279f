"""What the config files share. Not a config: config files load it by path with
`metricattn.config_utils.load_module(Path(__file__).with_name("common.py"))`."""

import ml_collections

from metricattn.attention.layer import parse_attention
from metricattn.errors import UserError


def attention(name: str) -> dict:
  """`config.model` fields `attention` (the kind) and `value_map` of a config's `attention=`
  argument: a kind (softmax, l2, metric; linear value map) or a variant of
  metricattn.attention.layer.VARIANTS (l2_lipschitz: l2 with Kim et al.'s value map)."""
  kind, value_map = parse_attention(name)
  return dict(attention=kind, value_map=value_map)


def transformer(attention: str, **sizes) -> dict:
  """`config.model` of the encoder-decoder Transformer (metricattn/models/transformer.py):
  the paper's (configs/multi30k_transformer.py), with `sizes` replacing some of its values."""
  model = dict(name="transformer", attention=attention, num_layers=6, num_heads=8,
               d_model=512, qk_dim=512, d_mlp=512, d_ff=2048, dropout=0.1,
               dropout_rng="hash",
               scale=ml_collections.FieldReference(None, field_type=float), norm="post",
               ln_eps=1e-12, positions="sinusoidal", max_len=256, scale_embeddings=False,
               share_embeddings=False, tie_output=False, label_smoothing=0.0,
               implementation=ml_collections.FieldReference(None, field_type=str),
               dtype="float32")
  unknown = set(sizes) - set(model)
  if unknown:
    raise UserError(f"unknown Transformer fields {sorted(unknown)}; allowed: {', '.join(model)}")
  return {**model, **sizes}


def ipn(name: str, *, width: int, depth: int, qk_dim: int, d_mlp: int) -> dict:
  """`config.model` of the paper's IPN (metricattn/models/ipn.py): one head, blocks
  H_new = S H_old with no value/output projection, residual or layer norm, logit scale
  1/sqrt(d_Q) unless `model.scale` is set (1.0 is the paper's Algorithm 1). `name` is the
  `attention=` argument (see `attention`); with l2_lipschitz a block is H_new = S H_old A
  (Kim et al.'s value map in place of the identity value)."""
  return dict(name="ipn", **attention(name), width=width, depth=depth, num_heads=1,
              qk_dim=qk_dim, d_mlp=d_mlp,
              scale=ml_collections.FieldReference(None, field_type=float),
              residual=False, layer_norm=False, projections=False)


def adam(lr: float, weight_decay: float) -> dict:
  """`config.optimizer`: Adam with L2 weight decay added to the gradient (PyTorch's
  `weight_decay`, as the paper), constant learning rate, no clipping."""
  return dict(name="adam", lr=lr, weight_decay=weight_decay, b1=0.9, b2=0.999, eps=1e-8,
              grad_clip=0.0, schedule="constant", warmup_steps=0)


TRANSLATION_SCHEDULES = ("paper", "fast")
DEFAULT_EPOCHS = {"paper": 1000, "fast": 40}


def translation_optimizer(schedule: str, per_epoch: int) -> dict:
  """`config.optimizer` of a translation schedule (configs/multi30k_transformer.py documents
  both); `per_epoch` is the number of steps in an epoch: an int, or a FieldReference (e.g.
  derived from data.batch_size), which the paper schedule's plateau.start_step, derived as
  100 epochs + 1 step, then follows."""
  if schedule == "paper":
    return dict(name="adam", lr=1e-5, weight_decay=5e-4, b1=0.9, b2=0.999, eps=5e-9,
                grad_clip=1.0, schedule="constant", warmup_steps=0,
                plateau=dict(factor=0.9, patience=10, start_step=100 * per_epoch + 1,
                             split="val", metric="loss"))
  if schedule == "fast":
    return dict(name="adamw", lr=5e-4, weight_decay=1e-4, b1=0.9, b2=0.98, eps=1e-9,
                grad_clip=1.0, schedule="warmup_cosine", warmup_steps=1000,
                plateau=dict(factor=0.0, patience=0, start_step=0, split="val", metric="loss"))
  raise UserError(f"unknown schedule {schedule!r}; allowed: {', '.join(TRANSLATION_SCHEDULES)}")
