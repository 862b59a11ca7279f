"""The kernels' implementations: blockwise (and cudnn, on a CUDA GPU) against the plain one."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn import attention as A
from metricattn.attention import blockwise, kernels
from metricattn.errors import UserError

KERNELS = {"dot": A.dot_product_attention, "l2": A.l2_attention}
ON_CUDA = jax.default_backend() == "gpu" and "cuda" in jax.devices()[0].client.platform_version


@pytest.fixture
def small_blocks(monkeypatch):
  """Blocks of 8 queries and 4 keys, so that tiny lengths span several blocks."""
  monkeypatch.setattr(blockwise, "BLOCK_Q", 8)
  monkeypatch.setattr(blockwise, "BLOCK_K", 4)


# Not `fast_compile`: programs compiled here without XLA's optimisations changed the numbers of
# a later test in the same process (the synthetic translation config's softmax run ended at
# BLEU 89.6 instead of above 90 after this module, and above 90 without it).


def masks(rng, b, lq, lk):
  """Each mask form the kernels take; the random one has a fully masked query row."""
  full = rng.random((b, 1, lq, lk)) < 0.6
  full[:, :, lq // 2] = False
  padding = np.arange(lk)[None, None, None, :] < rng.integers(1, lk + 1, (b, 1, 1, 1))
  causal = np.tril(np.ones((lq, lk), bool), k=lk - lq)[None, None]
  return {"none": None, "random": full, "padding": padding, "causal": causal,
          "per_head": rng.random((b, 2, lq, lk)) < 0.8}


@functools.partial(jax.jit, static_argnames=("kind", "implementation"))
def out_and_grads(q, k, v, w, mask, *, kind, implementation):
  """The kernel's output and the gradients of sum(w * output) with respect to q, k, v."""
  fn = lambda q, k, v: KERNELS[kind](q, k, v, mask=mask, implementation=implementation)
  loss = lambda q, k, v: (lambda o: (jnp.sum(w * o), o))(fn(q, k, v))
  (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return out, grads


@pytest.mark.parametrize("kind", ["dot", "l2"])
@pytest.mark.parametrize("seed, forms", [(0, ("none", "random", "causal")),
                                         (1, ("padding", "per_head"))])
def test_blockwise_equals_plain_values_and_gradients(kind, seed, forms, small_blocks):
  """Random shapes whose lengths do not divide the blocks (8, 4); every mask form."""
  rng = np.random.default_rng(seed)
  b, h, d, dv = rng.integers(1, 4), 2, rng.integers(2, 9), rng.integers(1, 6)
  lq, lk = rng.integers(9, 30, size=2)
  q = rng.normal(size=(b, lq, h, d)).astype(np.float32)
  k = (rng.normal(size=(b, lk, h, d)) + 3.0).astype(np.float32)   # an offset for l2's centre
  v = rng.normal(size=(b, lk, h, dv)).astype(np.float32)
  w = rng.normal(size=(b, lq, h, dv)).astype(np.float32)
  all_masks = masks(rng, b, lq, lk)
  for name in forms:
    mask = all_masks[name]
    out, grads = out_and_grads(q, k, v, w, mask, kind=kind, implementation="blockwise")
    ref, ref_grads = out_and_grads(q, k, v, w, mask, kind=kind, implementation="xla")
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5, err_msg=name)
    for g, e, arg in zip(grads, ref_grads, "qkv"):
      np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5, err_msg=f"{name} d{arg}")


@pytest.mark.parametrize("fn", KERNELS.values())
def test_blockwise_fully_masked_rows_are_zeros_with_zero_gradients(fn, small_blocks):
  rng = np.random.default_rng(7)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 11, 1, 4)), jnp.float32) for _ in range(3))
  mask = np.ones((1, 1, 11, 11), bool)
  mask[..., 2, :] = False                       # query 2 may attend to nothing
  mask[..., :, 4:8] = False                     # a whole key block masked for everyone
  out = fn(q, k, v, mask=mask, implementation="blockwise")
  assert np.all(np.asarray(out[0, 2]) == 0.0) and np.all(np.isfinite(out))
  dq = jax.grad(lambda q: jnp.sum(fn(q, k, v, mask=mask, implementation="blockwise")))(q)
  assert np.all(np.asarray(dq[0, 2]) == 0.0) and np.all(np.isfinite(dq))


def test_blockwise_keeps_dtype_and_works_under_vmap(small_blocks):
  rng = np.random.default_rng(8)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 1, 13, 2, 8)), jnp.bfloat16) for _ in range(3))
  fn = lambda q, k, v: A.l2_attention(q, k, v, implementation="blockwise")
  out = jax.jit(jax.vmap(fn))(q, k, v)
  assert out.dtype == jnp.bfloat16
  ref = jax.vmap(lambda q, k, v: A.l2_attention(q, k, v, implementation="xla"))(q, k, v)
  np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), atol=2e-2)


def largest_intermediate(fn, *args) -> int:
  """Element count of the largest tensor in the lowered program (forward and backward)."""
  text = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a)))).lower(*args).as_text()
  shapes = re.findall(r"tensor<([0-9x]+)x", text)
  return max(math.prod(int(d) for d in t.split("x")) for t in shapes)


@pytest.mark.parametrize("fn", KERNELS.values())
def test_blockwise_never_builds_the_logits(fn, small_blocks):
  """At length 256 the plain kernel's program holds [256, 256] logits; the blockwise one's
  largest array is linear in length (the inputs, the output and the per-block stacks)."""
  q = jnp.zeros((1, 256, 1, 8))
  plain = lambda q, k, v: fn(q, k, v, implementation="xla")
  blocked = lambda q, k, v: fn(q, k, v, implementation="blockwise")
  assert largest_intermediate(plain, q, q, q) >= 256 * 256
  assert largest_intermediate(blocked, q, q, q) <= 256 * 16


def test_none_chooses_blockwise_above_the_logits_budget(monkeypatch):
  q = jnp.ones((1, 16, 2, 4))
  budget = blockwise.logits_bytes(q.shape, q.shape)           # 4 * 2 * 16 * 16 bytes
  assert budget == 2048
  calls = []
  real = blockwise.blockwise_attention
  monkeypatch.setattr(blockwise, "blockwise_attention",
                      lambda *a, **kw: calls.append(1) or real(*a, **kw))
  monkeypatch.setattr(kernels, "LOGITS_BUDGET_BYTES", budget)
  assert kernels.choose_implementation(q, q, q, None, 4) == "xla"   # float32: never cudnn
  for fn in KERNELS.values():
    fn(q, q, q)
  assert calls == []
  monkeypatch.setattr(kernels, "LOGITS_BUDGET_BYTES", budget - 1)
  assert kernels.choose_implementation(q, q, q, None, 4) == "blockwise"
  for fn in KERNELS.values():
    fn(q, q, q)
  assert len(calls) == 2


def test_unknown_implementation_is_a_one_line_user_error():
  q = jnp.ones((1, 2, 1, 4))
  with pytest.raises(UserError, match=r"unknown attention implementation 'flash'; allowed: "
                                      r"xla, blockwise, cudnn or None"):
    A.l2_attention(q, q, q, implementation="flash")
  with pytest.raises(UserError, match="unknown attention implementation"):
    A.Attention(4, kind="softmax", num_heads=1, qk_features=4, implementation="pallas",
                rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", A.KINDS)
def test_layer_passes_the_implementation_to_the_kernel(kind, small_blocks):
  x = jax.random.normal(jax.random.key(0), (2, 10, 8))
  mask = jnp.tril(jnp.ones((10, 10), bool))[None, None]
  make = lambda impl: A.Attention(8, kind=kind, num_heads=2, qk_features=8, v_features=8,
                                  out_features=8, d_mlp=4, implementation=impl,
                                  rngs=nnx.Rngs(0))
  np.testing.assert_allclose(make("blockwise")(x, mask=mask), make("xla")(x, mask=mask),
                             atol=1e-5)


@pytest.mark.skipif(ON_CUDA, reason="on a CUDA GPU cudnn runs")
def test_cudnn_without_a_cuda_gpu_is_a_user_error():
  q = jnp.ones((1, 2, 1, 8), jnp.bfloat16)
  with pytest.raises(UserError, match="'cudnn' needs a CUDA GPU"):
    A.dot_product_attention(q, q, q, implementation="cudnn")


@pytest.mark.skipif(not ON_CUDA, reason="cuDNN fused attention needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["dot", "l2"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_cudnn_matches_plain(kind, dtype):
  """bfloat16 tolerance: float32 inputs run in bfloat16. Head size 60 (l2: 61) is padded to 64."""
  rng = np.random.default_rng(9)
  b, lq, lk, h, d = 2, 64, 48, 4, 60
  q, k = (jnp.asarray(rng.normal(size=(b, n, h, d)), dtype) for n in (lq, lk))
  v = jnp.asarray(rng.normal(size=(b, lk, h, 32)), dtype)
  mask = masks(rng, b, lq, lk)["random"]
  for m in (None, mask):
    out = KERNELS[kind](q, k, v, mask=m, implementation="cudnn")
    ref = KERNELS[kind](*(a.astype(jnp.float32) for a in (q, k, v)), mask=m,
                        implementation="xla")
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=5e-2)
    g = jax.grad(lambda q: jnp.sum(KERNELS[kind](q, k, v, mask=m, implementation="cudnn")
                                   .astype(jnp.float32)))(q)
    g_ref = jax.grad(lambda q: jnp.sum(KERNELS[kind](q, k, v, mask=m, implementation="xla")
                                       .astype(jnp.float32)))(q)
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(g_ref, np.float32),
                               atol=1e-1)


def test_transformer_configs_take_an_implementation_override():
  """`model.implementation` is a str field (default None) that reaches every Attention."""
  from metricattn.config_utils import load_config_file, set_override
  from metricattn.models.transformer import make_attention
  config = load_config_file("configs/translation_synthetic.py", "attention=l2")
  assert config.model.implementation is None
  set_override(config, "model.implementation", "blockwise")
  assert make_attention(config.model, cross=True, rngs=nnx.Rngs(0)).implementation == "blockwise"
  set_override(config, "model.implementation", "flash")
  with pytest.raises(UserError, match="allowed: xla, blockwise, cudnn"):
    make_attention(config.model, cross=False, rngs=nnx.Rngs(0))
