"""The paper's human-mesh segmentation (Maron et al. 2017; paper Fig. 5, Table 2): the IPN with
graph-masked attention, one label per face (8 body parts).

  python -m metricattn.main --config=configs/mesh_seg.py:attention=metric --workdir=runs/mesh-m

Arguments: attention (softmax, l2, metric, l2_lipschitz), features (hks, hks_short, hks_noisy,
xyz; metricattn/data/mesh_geometry.py, FEATURES), source (procedural, maron), steps, depth (0
gives the point-wise baseline: no propagation, same features and head).

Paper settings (Table 2): Adam with coupled L2 weight decay, lr 1e-3, weight decay 1e-4,
d_Q 64, d_mlp 64, tanh in the metric MLP; attention only between adjacent vertices ("the
similarity between non-adjacent nodes is set to zero"); DiffusionNet's features; per-face
labels from the mean of a face's three vertices after the last block.

Choices the paper leaves open (the same for all three kinds):
  - Data: `procedural` is the project's generator (metricattn/data/meshes.py: 380 training
    and 20 test bodies from data.seed 0, the sizes of Maron et al.'s set, the same for every
    run seed; cached in $METRICATTN_DATA/meshes or ~/.cache/metricattn/meshes). `maron` reads
    the real set from data.data_dir (DiffusionNet's layout).
  - Features (`features`, data.features): `hks` (the default), the heat kernel signature (16
    times logspace(-2, 0), 64 eigenpairs of the cotangent Laplacian): long times already
    encode the part, so a point-wise model nearly solves the task. Variants that leave work
    for the graph, made from the same cached HKS (docs/graph.md, "Which features test the
    graph"): `hks_short`, its shortest HKS_SHORT_TIMES times only; `hks_noisy`, the 16 times
    plus fixed Gaussian noise of HKS_NOISE per-column standard deviations per vertex. `xyz`:
    the normalised positions (each body has a random yaw, so only the height and the
    distance from the vertical axis carry the part).
  - IPN width 64, depth 2, one head; blocks H_new = S H_old with no value/output projection,
    residual or layer norm; each vertex attends to its mesh neighbours and itself (the sparse
    graph kernel, metricattn.attention.graph_attention), the graph given as neighbour lists
    (`data.graph_form="ell"`; "segment", a sorted edge list, is what runs made before
    2026-12-02 used: the same attention, rounded differently).
  - Logit scale 1/sqrt(d_Q) (`model.scale=1.0` is the paper's Algorithm 1).
  - 2 meshes per step (one graph), 1,000 steps (about 5 epochs).
  - Seeds trained in one program (the experiments' `--vmap-seeds`) run as one unbatched copy
    of the step per seed (`train.stacked_seeds="unroll"`, metricattn/feeder.py): on XLA:CPU
    that is faster than vmap for the graph kernels (docs/graph.md). Runs made before
    2026-12-02 vmapped them (configs without the key still do).
"""

from pathlib import Path

import ml_collections

from metricattn.config_utils import load_module, parse_arg

common = load_module(Path(__file__).with_name("common.py"))


def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", features="hks", source="procedural", steps=1000,
                  depth=2)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "classification"
  c.data = dict(name="mesh_seg", source=arg.source, features=arg.features, seed=0,
                num_train=380, num_test=20, data_dir="", batch_size=2, graph_form="ell")
  c.model = common.ipn(arg.attention, width=64, depth=arg.depth, qk_dim=64, d_mlp=64)
  c.optimizer = common.adam(lr=1e-3, weight_decay=1e-4)
  c.train = dict(steps=arg.steps, log_every=50, eval_every=200, checkpoint_every=500,
                 keep_checkpoints=2, stacked_seeds="unroll")
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
