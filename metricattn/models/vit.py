"""Vision Transformer (Flax NNX) whose attention is the project's `Attention` of any kind.

image [b, H, W, C] -> patches [b, N, p*p*C] -> linear embedding [b, N, width]
  (+ class token) + learned position embeddings -> dropout
  -> `depth` pre-LN blocks: x + Dropout(Attention(LN(x))), then x + MLP(LN(x))
  -> LN -> class token or mean of the tokens -> linear head -> logits [b, classes]
Class token zero-initialised, position embeddings N(0, 0.02^2), head kernel zero (as
big_vision), other layers Flax defaults. Dropout keys are split from the one `rngs` key given
at call time, so the model is a pure function of (params, x, train, key).

The attention kind (softmax, l2, metric) is the only thing that differs between kinds: same
width, depth, heads and MLP. l2 and metric share one query/key projection (so they have
width * (width + 1) fewer parameters per block than softmax), and metric adds its MLP g
(2 * width * d_mlp + d_mlp + width parameters per block). Value and output projections have
width `width` for every kind.

Variants are named SIZE/PATCH, e.g. `Ti/4` (ViT-Ti with 4x4 patches), resolved only by
`parse_variant`. Sizes (width, depth, heads, MLP width):
  Mu   64,  4,  4,  256    micro, for CPU runs
  Ti  192, 12,  3,  768    DeiT-Ti
  S   384, 12,  6, 1536    ViT-S
  B   768, 12, 12, 3072    ViT-B
Suggested: Mu/7 (16 patches; the best of Mu/4, Mu/7 and a width-128 Mu/7 for one CPU epoch of
Fashion-MNIST) or Ti/4 (49 patches) for 28x28, Ti/2 or Mu/2 for the 8x8 digits (16
patches), S/4 for CIFAR-10 32x32 (64 patches). At 28x28, Mu/7 and Mu/4 have equally many
parameters (a 49-pixel patch and 16 positions against a 16-pixel patch and 49 positions).

Config fields read by `from_config` (config.model.*):
  name       str    "vit".
  variant    str    SIZE/PATCH, e.g. "Ti/4"; the patch size must divide the image size.
  attention  str    softmax | l2 | metric.
  value_map  str    linear | lipschitz (l2 only: Kim et al.'s Lipschitz L2 attention,
                    metricattn/attention/layer.py).
  d_mlp      int    hidden width of the metric MLP g (metric only); 0 = the variant's width.
  scale      float or None   logit scale; None = 1/sqrt(head_dim); 1.0 = the paper's Alg. 1.
  pool       str    cls (class token) | mean (mean of the patch tokens, no class token).
  dropout    float  dropout rate on embeddings, attention outputs and the MLP (e.g. 0.0).
  implementation, dtype   optional: the attention kernels' implementation (None chooses)
                    and "float32" | "bfloat16" (every layer computes in bfloat16, the
                    parameters stay float32), as for the Transformer; configs without
                    them get None and float32.
The attention options are read by `AttentionOptions.from_config`
(metricattn/attention/layer.py), as for every model family.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from metricattn.errors import UserError
from metricattn.attention import AttentionOptions

POOLS = ("cls", "mean")


@dataclasses.dataclass(frozen=True)
class Size:
  width: int
  depth: int
  num_heads: int
  mlp_dim: int


SIZES = {
    "Mu": Size(64, 4, 4, 256),
    "Ti": Size(192, 12, 3, 768),
    "S": Size(384, 12, 6, 1536),
    "B": Size(768, 12, 12, 3072),
}


def parse_variant(variant: str) -> tuple[Size, int]:
  """"Ti/4" -> (SIZES["Ti"], 4)."""
  size, _, patch = variant.partition("/")
  if size not in SIZES or not patch.isdigit() or int(patch) < 1:
    raise UserError(f"unknown ViT variant {variant!r}; use SIZE/PATCH with SIZE one of "
                    f"{', '.join(SIZES)} and PATCH a positive integer, e.g. Ti/4")
  return SIZES[size], int(patch)


def check_patch(image_shape: tuple[int, ...], patch: int, variant: str) -> None:
  """UserError unless `patch` divides both sides of [H, W, C] images."""
  h, w = image_shape[:2]
  if h % patch or w % patch:
    ok = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
    raise UserError(f"patch size {patch} of ViT variant {variant} does not divide the {h}x{w} "
                    f"images; allowed patch sizes: {', '.join(map(str, ok))}")


def patchify(x: jax.Array, patch: int) -> jax.Array:
  """[b, H, W, C] -> [b, (H/p) * (W/p), p * p * C], patches in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def _split(key: jax.Array | None, n: int) -> list[jax.Array | None]:
  return [None] * n if key is None else list(jax.random.split(key, n))


class MLP(nnx.Module):
  """width -> mlp_dim (gelu, dropout) -> width (dropout)."""

  def __init__(self, width: int, mlp_dim: int, dropout: float, *, rngs: nnx.Rngs, dtype=None):
    self.fc1 = nnx.Linear(width, mlp_dim, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, width, dtype=dtype, rngs=rngs)
    self.drop = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None) -> jax.Array:
    """x [b, n, width] -> [b, n, width]."""
    k1, k2 = _split(key, 2)
    h = self.drop(nnx.gelu(self.fc1(x)), deterministic=not train, rngs=k1)
    return self.drop(self.fc2(h), deterministic=not train, rngs=k2)


class Block(nnx.Module):
  """Pre-LN encoder block: x + Dropout(Attention(LN(x))); x + MLP(LN(x))."""

  def __init__(self, size: Size, *, attention: AttentionOptions, d_mlp: int, dropout: float,
               rngs: nnx.Rngs):
    w, dtype = size.width, attention.dtype
    self.norm1 = nnx.LayerNorm(w, dtype=dtype, rngs=rngs)
    self.attn = attention.layer(w, num_heads=size.num_heads, qk_features=w, v_features=w,
                                out_features=w, d_mlp=d_mlp, rngs=rngs)
    self.drop = nnx.Dropout(dropout)
    self.norm2 = nnx.LayerNorm(w, dtype=dtype, rngs=rngs)
    self.mlp = MLP(w, size.mlp_dim, dropout, rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None) -> jax.Array:
    """x [b, n, width] -> [b, n, width]."""
    k1, k2 = _split(key, 2)
    x = x + self.drop(self.attn(self.norm1(x)), deterministic=not train, rngs=k1)
    return x + self.mlp(self.norm2(x), train=train, key=k2)


class ViT(nnx.Module):
  """Vision Transformer classifier: images [b, H, W, C] -> logits [b, num_classes].

  Args:
    image_shape: (H, W, C) of the inputs.
    num_classes: number of classes.
    variant: SIZE/PATCH, see the module docstring.
    kind: attention kind, softmax | l2 | metric.
    d_mlp: hidden width of the metric MLP (metric only); 0 = the variant's width.
    scale: attention logit scale; None = 1/sqrt(head_dim).
    pool: "cls" or "mean".
    dropout: dropout rate.
    value_map: "linear" or "lipschitz" (l2 only).
    implementation: the attention kernels' implementation; None chooses per call.
    dtype: computation dtype of every layer, None (float32) or jnp.bfloat16.
    kind, value_map, scale, implementation and dtype are the fields of `AttentionOptions`.
  """

  def __init__(self, image_shape: tuple[int, ...], num_classes: int, *, variant: str,
               kind: str, rngs: nnx.Rngs, d_mlp: int = 0, scale: float | None = None,
               pool: str = "cls", dropout: float = 0.0, value_map: str = "linear",
               implementation: str | None = None, dtype=None):
    if len(image_shape) != 3:
      raise UserError(f"the ViT needs images [H, W, C]; the dataset's inputs have shape "
                      f"{tuple(image_shape)}")
    size, self.patch = parse_variant(variant)
    check_patch(image_shape, self.patch, variant)
    if pool not in POOLS:
      raise UserError(f"unknown ViT pool {pool!r}; allowed: {', '.join(POOLS)}")
    if not 0.0 <= dropout < 1.0:
      raise UserError(f"dropout must be in [0, 1); got {dropout}")
    h, w, c = image_shape
    num_patches = (h // self.patch) * (w // self.patch)
    width, self.dropout = size.width, dropout
    attention = AttentionOptions(kind, value_map, scale, implementation, dtype)
    self.embed = nnx.Linear(self.patch * self.patch * c, width, dtype=dtype, rngs=rngs)
    self.cls = nnx.Param(jnp.zeros((1, 1, width))) if pool == "cls" else None
    num_tokens = num_patches + (pool == "cls")
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, num_tokens, width)))
    self.drop = nnx.Dropout(dropout)
    self.blocks = nnx.List([
        Block(size, attention=attention, d_mlp=d_mlp or width, dropout=dropout, rngs=rngs)
        for _ in range(size.depth)])
    self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(width, num_classes, kernel_init=nnx.initializers.zeros, dtype=dtype,
                           rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False,
               rngs: jax.Array | None = None) -> jax.Array:
    """x [b, H, W, C] -> logits [b, num_classes]; `rngs` is the dropout key (train only)."""
    if mask is not None:
      raise UserError("the ViT classifies images independently; use eval.mode=plain")
    if train and self.dropout > 0 and rngs is None:
      raise ValueError("ViT training with dropout needs a PRNG key: model(x, train=True, rngs=key)")
    use_keys = train and self.dropout > 0
    keys = _split(rngs if use_keys else None, len(self.blocks) + 1)
    t = self.embed(patchify(x, self.patch))
    if self.cls is not None:
      cls = self.cls[...].astype(t.dtype)
      t = jnp.concatenate([jnp.broadcast_to(cls, (t.shape[0], 1, t.shape[-1])), t], 1)
    t = self.drop(t + self.pos[...].astype(t.dtype), deterministic=not train, rngs=keys[0])
    for block, key in zip(self.blocks, keys[1:]):
      t = block(t, train=train, key=key)
    t = self.norm(t)
    return self.head(t[:, 0] if self.cls is not None else jnp.mean(t, axis=1))


def from_config(m, info: dict, rngs: nnx.Rngs) -> ViT:
  """Builds the ViT from `config.model` (fields: module docstring) and the dataset's info;
  runs written before `model.value_map` existed have the linear value map."""
  return ViT(tuple(info["input_shape"]), info["num_classes"], variant=m.variant,
             d_mlp=int(m.d_mlp), pool=m.pool, dropout=float(m.dropout), rngs=rngs,
             **dataclasses.asdict(AttentionOptions.from_config(m)))
