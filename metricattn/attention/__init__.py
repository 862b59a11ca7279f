"""Attention: pure kernels (`kernels.py`) and the one Flax attention module (`layer.py`).

  from metricattn.attention import dot_product_attention, l2_attention   # kernels
  from metricattn.attention import Attention, KINDS                      # the layer
  from metricattn.attention import AttentionOptions                      # from config.model

`KINDS` is the one tuple of the paper's attention kinds, `CONTROL_KINDS` the controls beyond
it (softmax_g), `KIND_SPECS` what differs between all of them;
`check_kind` the one place a kind is checked. Model families build their attention layers
with `AttentionOptions.from_config(config.model).layer(...)`.
`IMPLEMENTATIONS` ("xla", "blockwise", "cudnn"; None chooses) and `check_implementation`
are the same for the kernels' `implementation=` argument. Graph-masked attention
(`graph_attention`, `graph.py`) has its own forms ("ell", "segment", "dense"), built on the
host by `neighbour_lists`, `sort_edges` or `graph_layout`.
"""

from metricattn.attention.graph import (adjacency_mask, graph_attention, graph_layout,
                                        neighbour_lists, sort_edges)
from metricattn.attention.kernels import (IMPLEMENTATIONS, check_implementation,
                                          dot_product_attention, dot_product_logits,
                                          key_centre, key_sqnorm, l2_attention, l2_logits,
                                          masked_softmax_attend)
from metricattn.attention.layer import (CONTROL_KINDS, KIND_SPECS, KINDS, Attention, AttentionOptions,
                                        MetricMLP, check_kind, compute_dtype, split_heads)

__all__ = ["CONTROL_KINDS", "IMPLEMENTATIONS", "KINDS", "KIND_SPECS", "Attention", "AttentionOptions",
           "MetricMLP", "adjacency_mask", "compute_dtype",
           "check_implementation", "check_kind", "dot_product_attention", "dot_product_logits",
           "graph_attention", "graph_layout", "key_centre", "key_sqnorm", "l2_attention", "l2_logits",
           "masked_softmax_attend", "neighbour_lists", "sort_edges", "split_heads"]
