"""Datasets, selected by `config.data.name`.

Every dataset object offers:
  info: dict                     facts the model and task need, e.g. {"num_classes": 2,
                                 "input_shape": (2,)}
  train_batch(step) -> dict      training batch `step` (0-based) as NumPy arrays; a pure
                                 function of (config.seed, step), so resume is exact
  eval_splits: tuple[str, ...]   splits evaluated during training, e.g. ("val", "test")
  eval_batches(split) -> iter    the split in order, as dicts of NumPy arrays
and may offer (the in-memory array datasets do):
  resident_arrays() -> dict|None the whole training split, when train_batch(step) is
                                 train_indices(step) of it; the trainer then keeps it on
                                 the device and sends only indices (no per-step copy)
  train_indices(step) -> array   indices of training batch `step`

Classification batches hold `x` (float32 [batch, ...]) and `y` (int32 [batch]); evaluation
batches may add `weight` (float32 [batch]; 0 for padding or context examples that are not
scored) and, for set models such as the IPN, `mask` (bool [batch, batch]; which example may
attend to which).

Mesh segmentation batches hold a padded graph of a few meshes: `x` [nodes, features],
`receivers`/`senders` (neighbour lists [nodes, max_degree], or with
`data.graph_form="segment"` a sorted edge list [edges]), `faces` [faces, 3], per-face `y`
and `weight` (see metricattn/data/mesh_seg.py).

Translation batches hold int32 `src`, `tgt_in`, `tgt_out` (see metricattn/data/translation.py).

Token classification batches (ListOps, metricattn/data/listops.py) hold `x` uint8 token ids
[batch, seq_len] (0 = padding, which the model masks) and `y` int32 [batch]; `info` adds
`vocab_size` and `seq_len`.

Generated data sets are cached below $METRICATTN_DATA (metricattn/data/cache.py).
"""

from __future__ import annotations

from metricattn.errors import UserError

IMAGE_NAMES = ("mnist", "fashion_mnist", "cifar10", "digits")  # metricattn.data.images
TRANSLATION_NAMES = ("multi30k", "debian_l10n", "synthetic_translation")  # data.translation, .l10n
NAMES = ("moons", *IMAGE_NAMES, *TRANSLATION_NAMES, "mesh_seg", "listops")


def get_dataset(config):
  name = config.data.name
  if name == "moons":
    from metricattn.data.moons import MoonsData
    return MoonsData(config)
  if name in IMAGE_NAMES:
    from metricattn.data.images import ImageData
    return ImageData(config)
  if name == "multi30k":
    from metricattn.data.translation import Multi30kData
    return Multi30kData(config)
  if name == "debian_l10n":
    from metricattn.data.l10n import DebianL10nData
    return DebianL10nData(config)
  if name == "synthetic_translation":
    from metricattn.data.synthetic_translation import SyntheticTranslation
    return SyntheticTranslation(config)
  if name == "mesh_seg":
    from metricattn.data.mesh_seg import MeshSegData
    return MeshSegData(config)
  if name == "listops":
    from metricattn.data.listops import ListOpsData
    return ListOpsData(config)
  raise UserError(f"unknown dataset {name!r}; allowed: {', '.join(NAMES)}")
