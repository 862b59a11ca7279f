"""Vision Transformer: shapes per attention kind, golden parameter counts, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from metricattn.errors import UserError
from metricattn.attention import KINDS
from metricattn.models import build_model, num_params
from metricattn.models.vit import SIZES, ViT, parse_variant

DIGITS = (8, 8, 1)
MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)

# Trainable parameters with 10 classes, class-token pooling and d_mlp = width (the default).
GOLDEN = {
    ("Mu/2", DIGITS): {"softmax": 202_186, "l2": 185_546, "metric": 218_826},
    ("Mu/4", MNIST): {"softmax": 205_066, "l2": 188_426, "metric": 221_706},
    ("Ti/2", DIGITS): {"softmax": 5_345_098, "l2": 4_900_426, "metric": 5_789_770},
    ("Ti/4", MNIST): {"softmax": 5_353_738, "l2": 4_909_066, "metric": 5_798_410},
    ("S/4", CIFAR): {"softmax": 21_342_346, "l2": 19_568_266, "metric": 23_116_426},
    ("B/4", CIFAR): {"softmax": 85_152_010, "l2": 78_064_906, "metric": 92_239_114},
}


def abstract_params(shape, variant, kind, **kwargs) -> int:
  """Parameter count without allocating the parameters."""
  model = nnx.eval_shape(lambda: ViT(shape, 10, variant=variant, kind=kind,
                                     rngs=nnx.Rngs(0), **kwargs))
  return num_params(model)


def model_config(**fields) -> ConfigDict:
  m = dict(name="vit", variant="Mu/2", attention="metric", d_mlp=0, scale=None, pool="cls",
           dropout=0.0)
  m.update(fields)
  return ConfigDict(dict(model=m))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_forward_shapes(kind, pool):
  model = ViT(DIGITS, 10, variant="Mu/2", kind=kind, pool=pool, dropout=0.1,
              rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, *DIGITS)), jnp.float32)
  logits = model(x)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  train = model(x, train=True, rngs=jax.random.key(1))
  assert train.shape == (3, 10) and bool(jnp.all(jnp.isfinite(train)))


def test_dropout_is_a_pure_function_of_the_key():
  model = ViT(DIGITS, 10, variant="Mu/2", kind="l2", dropout=0.5, rngs=nnx.Rngs(0))
  model.head.kernel[...] = jax.random.normal(jax.random.key(9), model.head.kernel.shape)
  x = jnp.ones((2, *DIGITS))
  a = model(x, train=True, rngs=jax.random.key(1))
  np.testing.assert_array_equal(a, model(x, train=True, rngs=jax.random.key(1)))
  assert not np.allclose(a, model(x, train=True, rngs=jax.random.key(2)))
  np.testing.assert_array_equal(model(x), model(x, train=False, rngs=jax.random.key(1)))
  with pytest.raises(ValueError, match="PRNG key"):
    model(x, train=True)


@pytest.mark.parametrize("variant,shape", list(GOLDEN), ids=[v for v, _ in GOLDEN])
def test_golden_parameter_counts(variant, shape):
  counts = {kind: abstract_params(shape, variant, kind) for kind in KINDS}
  assert counts == GOLDEN[variant, shape]


@pytest.mark.parametrize("variant", ["Mu/4", "Ti/4"])
@pytest.mark.parametrize("d_mlp", [0, 32])
def test_kind_parameter_differences(variant, d_mlp):
  size, _ = parse_variant(variant)
  w, depth = size.width, size.depth
  hidden = d_mlp or w
  counts = {k: abstract_params(MNIST, variant, k, d_mlp=d_mlp) for k in KINDS}
  metric_mlp = 2 * w * hidden + hidden + w  # W1, b1, W2, b2 of g per block
  assert counts["metric"] - counts["l2"] == depth * metric_mlp
  assert counts["softmax"] - counts["l2"] == depth * (w * w + w)  # the separate key projection


def test_mean_pool_drops_the_class_token_and_its_position():
  w = SIZES["Mu"].width
  assert (abstract_params(MNIST, "Mu/4", "l2", pool="cls")
          - abstract_params(MNIST, "Mu/4", "l2", pool="mean")) == 2 * w


def test_bad_patch_size_and_variant():
  with pytest.raises(UserError, match=r"patch size 3 .* allowed patch sizes: 1, 2, 4, 8"):
    ViT(DIGITS, 10, variant="Mu/3", kind="softmax", rngs=nnx.Rngs(0))
  for bad in ("Mu", "XL/4", "Ti/x", "Ti/0"):
    with pytest.raises(UserError, match="unknown ViT variant"):
      parse_variant(bad)
  with pytest.raises(UserError, match="unknown ViT pool"):
    ViT(DIGITS, 10, variant="Mu/2", kind="softmax", pool="max", rngs=nnx.Rngs(0))
  with pytest.raises(UserError, match="unknown attention kind"):
    ViT(DIGITS, 10, variant="Mu/2", kind="cosine", rngs=nnx.Rngs(0))
  with pytest.raises(UserError, match=r"images \[H, W, C\]"):
    ViT((784,), 10, variant="Mu/2", kind="softmax", rngs=nnx.Rngs(0))


def test_set_masks_are_refused():
  model = ViT(DIGITS, 10, variant="Mu/2", kind="softmax", rngs=nnx.Rngs(0))
  with pytest.raises(UserError, match="eval.mode=plain"):
    model(jnp.ones((2, *DIGITS)), mask=jnp.ones((2, 2), bool))


def test_build_model_reads_the_config():
  info = {"num_classes": 10, "input_shape": DIGITS}
  model = build_model(model_config(), info, nnx.Rngs(0))
  assert isinstance(model, ViT)
  assert num_params(model) == GOLDEN["Mu/2", DIGITS]["metric"]
  small = build_model(model_config(d_mlp=16, pool="mean", scale=1.0, dropout=0.1,
                                   attention="l2"), info, nnx.Rngs(0))
  assert small(jnp.ones((4, *DIGITS)), train=True, rngs=jax.random.key(0)).shape == (4, 10)
  with pytest.raises(UserError, match="patch size 5"):
    build_model(model_config(variant="Mu/5"), info, nnx.Rngs(0))
