"""The paper's IPN (information propagation network) for vector data.

input -> linear -> `depth` propagation blocks -> linear -> class logits.

A batch of examples is one set: attention runs across the examples (like kNN or label
propagation), not within an example. A block is `H_new = S H_old` with S the attention
matrix of the configured kind; by default without value or output projection, residual or
layer norm, as the paper describes it. Those are config options.

`model.value_map` "lipschitz" (l2 only) is Kim et al.'s Lipschitz L2 attention
(metricattn/attention/layer.py): the block becomes `H_new = S H_old A` with
A = P P^T / sqrt(d_Q / num_heads) from the block's query/key projection P, in place of the identity
value map (and in front of the value projection when `projections` is on).

The attention options (kind and value map, scale, `implementation`, `dtype`) are read by
`AttentionOptions.from_config` (metricattn/attention/layer.py), as for every model family;
configs without `implementation` or `dtype` get None (the kernels choose) and float32.
`dtype` "bfloat16" computes every layer in bfloat16 (parameters stay float32; the task casts
the logits to float32). The graph-masked path takes no `implementation` (it refuses one):
its kernel follows the graph's form (metricattn/attention/graph.py): neighbour lists
[n, max_degree] run the "ell" kernel, an edge list [edges] the sorted-segment one. A data
set whose edge lists are sorted and distinct already (the mesh data's with
`data.graph_form="segment"`, built on the host) says so with `info["sorted_edges"]`, and the
kernel does not sort them again each step.
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from metricattn.attention import AttentionOptions


class PropagationBlock(nnx.Module):

  def __init__(self, width: int, *, attention: AttentionOptions, num_heads: int, qk_dim: int,
               d_mlp: int, residual: bool, layer_norm: bool, projections: bool,
               rngs: nnx.Rngs):
    self.attn = attention.layer(width, num_heads=num_heads, qk_features=qk_dim, d_mlp=d_mlp,
                                v_features=width if projections else None,
                                out_features=width if projections else None, rngs=rngs)
    self.norm = (nnx.LayerNorm(width, dtype=attention.dtype, rngs=rngs) if layer_norm
                 else None)
    self.residual = residual

  def __call__(self, h: jax.Array, mask: jax.Array | None, graph=None,
               presorted: bool = False) -> jax.Array:
    """h [1, n, width], mask [n, n] or None; or `graph` = (receivers, senders), an edge list
    [edges] or neighbour lists [n, max_degree]: the sparse graph-masked path (attention only
    along edges, no [n, n] array); `presorted`: the edge list is sorted and distinct."""
    x = self.norm(h) if self.norm is not None else h
    if graph is not None:
      out = self.attn.graph(x[0], *graph, presorted=presorted)[None]
    else:
      out = self.attn(x, mask=None if mask is None else mask[None, None])
    return h + out if self.residual else out


class IPN(nnx.Module):
  """IPN classifier over a set: x [n, in_dim] (one set of n examples) -> logits [n, classes]."""

  def __init__(self, in_dim: int, num_classes: int, *, width: int, depth: int,
               attention: AttentionOptions, num_heads: int, qk_dim: int, d_mlp: int,
               residual: bool, layer_norm: bool, projections: bool, rngs: nnx.Rngs,
               sorted_edges: bool = False):
    dtype = attention.dtype
    self.embed = nnx.Linear(in_dim, width, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        PropagationBlock(width, attention=attention, num_heads=num_heads, qk_dim=qk_dim,
                         d_mlp=d_mlp, residual=residual, layer_norm=layer_norm,
                         projections=projections, rngs=rngs)
        for _ in range(depth)])
    self.head = nnx.Linear(width, num_classes, dtype=dtype, rngs=rngs)
    self.sorted_edges = sorted_edges

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, receivers=None,
               senders=None, faces=None, train: bool = False, rngs=None) -> jax.Array:
    """With `receivers`/`senders` (an edge list [edges] or neighbour lists [n, max_degree],
    see attention/graph.py) the blocks attend along the graph's edges only (the paper's
    mesh segmentation); with `faces` int32 [faces, 3] the logits are per face, from
    the mean of its three vertices' features after the last block (the paper's fixed
    aggregation), computed as the mean of their logits."""
    del train, rngs  # no dropout in the IPN
    graph = None if receivers is None else (receivers, senders)
    h = self.embed(x.reshape(x.shape[0], -1))[None]
    for block in self.blocks:
      h = block(h, mask, graph, self.sorted_edges)
    if faces is None:
      return self.head(h[0])
    # The head is affine: the mean of a face's three vertex logits is the head of the mean
    # of their features, with 8 numbers per vertex gathered instead of `width` (since
    # 2026-12-02; before, the head of the mean feature: the same values, rounded differently).
    z = self.head(h[0])
    return (z[faces[:, 0]] + z[faces[:, 1]] + z[faces[:, 2]]) / 3


def from_config(m, info: dict, rngs: nnx.Rngs) -> IPN:
  """Builds the IPN from `config.model` and the dataset's info (input_shape, num_classes);
  runs written before `model.value_map` existed have the linear value map."""
  return IPN(math.prod(info["input_shape"]), info["num_classes"], width=m.width,
             depth=m.depth, attention=AttentionOptions.from_config(m), num_heads=m.num_heads,
             qk_dim=m.qk_dim, d_mlp=m.d_mlp, residual=m.residual, layer_norm=m.layer_norm,
             projections=m.projections, rngs=rngs,
             sorted_edges=bool(info.get("sorted_edges", False)))
