"""The hash dropout (metricattn/models/dropout.py): rate, independence, determinism, and the
threefry option that is Flax's dropout bitwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn.errors import UserError
from metricattn.models.dropout import Dropout, keep_mask

SHAPE = (512, 1024)  # 524,288 elements: the binomial sd of the keep rate is 4.1e-4 at 0.9


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.02])
def test_keep_rate_is_the_probability(keep):
  m = np.asarray(keep_mask(jax.random.key(3), keep, SHAPE))
  sd = np.sqrt(keep * (1 - keep) / m.size)
  assert abs(m.mean() - keep) < 5 * sd


def test_masks_of_other_keys_and_neighbours_are_uncorrelated():
  key = jax.random.key(0)
  a = np.asarray(keep_mask(jax.random.fold_in(key, 1), 0.5, SHAPE), np.float64).ravel()
  b = np.asarray(keep_mask(jax.random.fold_in(key, 2), 0.5, SHAPE), np.float64).ravel()
  bound = 5 / np.sqrt(a.size)  # 5 sd of a correlation of independent bits
  assert abs(np.corrcoef(a, b)[0, 1]) < bound
  assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < bound            # neighbours along a row
  rows = a.reshape(SHAPE)
  assert abs(np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1]) < bound  # down a column
  assert not np.array_equal(a, b)


def test_same_key_same_mask_and_inverted_scaling():
  x = jnp.arange(1.0, 1.0 + np.prod(SHAPE)).reshape(SHAPE)
  drop = Dropout(0.1)
  key = jax.random.key(7)
  y1 = np.asarray(drop(x, deterministic=False, rngs=key))
  y2 = np.asarray(jax.jit(lambda x, k: drop(x, deterministic=False, rngs=k))(x, key))
  np.testing.assert_array_equal(y1, y2)
  kept = y1 != 0
  np.testing.assert_allclose(y1[kept], np.asarray(x)[kept] / np.float32(0.9), rtol=3e-7)
  np.testing.assert_array_equal(np.asarray(drop(x, deterministic=True)), np.asarray(x))


def test_threefry_is_flax_dropout_bitwise():
  x = jax.random.normal(jax.random.key(1), (64, 33))
  key = jax.random.key(5)
  ours = Dropout(0.3, "threefry")(x, deterministic=False, rngs=key)
  flax = nnx.Dropout(0.3)(x, deterministic=False, rngs=key)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(flax))


def test_unknown_rng_and_missing_key_are_clear():
  with pytest.raises(UserError, match="unknown model.dropout_rng 'philox'; allowed: hash, threefry"):
    Dropout(0.1, "philox")
  with pytest.raises(ValueError, match="needs a key"):
    Dropout(0.1)(jnp.ones(3), deterministic=False)
