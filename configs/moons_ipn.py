"""The paper's Moon experiment (Fig. 4): IPN with softmax, l2 or metric attention.

  python -m metricattn.main --config=configs/moons_ipn.py:attention=metric \
      --workdir=runs/moons-metric-0 --config.seed=0

`attention` is softmax, l2 or metric, or l2_lipschitz: l2 with Kim et al.'s Lipschitz value
map (model.value_map=lipschitz; a block is H_new = S H_old A with A = P P^T / sqrt(d_Q) in
place of the identity value; metricattn/attention/layer.py), the robustness row beyond the
paper.

Paper settings (Table 2): make_moons noise 0.2, 400 train / 100 test, Adam with coupled
L2 weight decay, lr 1e-3, weight decay 1e-4, d_Q 10, d_mlp 10, tanh in the metric MLP.

Choices the paper leaves open (the same for all three kinds):
  - The data set is generated from `seed` (data.seed -1), so the spread over seeds covers
    data and initialisation. Set data.seed to fix the data.
  - IPN width 16, depth 2, one head; blocks are H_new = S H_old with no value/output
    projection, residual or layer norm (the paper's description).
  - Logit scale 1/sqrt(d_Q) for all kinds (`model.scale=1.0` gives the paper's Algorithm 1).
  - Training sets: 100 training points per step (a seeded permutation per epoch), 2,000
    steps (500 epochs).
  - Evaluation mode `train_context`: each test point attends to itself and a fixed, seeded
    set of 100 training points, like the sets seen in training, so its prediction does not
    depend on which other test points share its batch (`batch` is the alternative).
"""

from pathlib import Path

import ml_collections

from metricattn.config_utils import load_module, parse_arg

common = load_module(Path(__file__).with_name("common.py"))


def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", steps=2000)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "classification"
  c.data = dict(name="moons", num_train=400, num_test=100, noise=0.2, seed=-1, batch_size=100)
  c.eval = dict(mode="train_context", batch_size=100, context_size=100)
  c.model = common.ipn(arg.attention, width=16, depth=2, qk_dim=10, d_mlp=10)
  c.optimizer = common.adam(lr=1e-3, weight_decay=1e-4)
  c.train = dict(steps=arg.steps, log_every=50, eval_every=200, checkpoint_every=500,
                 keep_checkpoints=2)
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
