"""The paper's comparisons as experiment definitions: one entry per figure (and ours).

Each entry names a base config, the grid (attention kind x seeds, 10 seeds as in the
paper), the headline metric, the target used for "steps to target", whether seeds train
vmapped in one program, a published number to compare with where there is one (`anchor`,
printed in the report: `lra_listops`), and budgets:
  full   what the paper's comparison needs (10 seeds, the configs' full length); sized for
         GPUs except where noted.
  quick  runs on the project's 2-core x86_64 CPU in minutes (fewer steps, sometimes fewer
         seeds or a smaller model; the report says which).
  test   a few steps and 2 seeds, for the test suite.
  residual, pointwise   (Moon and the IPN image experiments) controls of `quick`: a residual
         connection around each block, and no propagation at all (depth 0); mesh_seg's
         `pointwise` is the same control.
  lr     (the IPN image experiments) `quick` over a grid of learning rates, each kind's chosen
         on val (the report's "Chosen per kind on val"); their `full` budgets choose the same
         way.
`python -m metricattn.experiment NAME --budget quick` runs one end to end (the runner,
`metricattn/experiment.py`); this module only defines them.

The experiments with a robustness evaluation (Moon and the image classifiers) add a fourth
row to the three kinds, `l2_lipschitz` (ROBUSTNESS_KINDS): l2 attention with Kim,
Papamakarios & Mnih's (ICML 2021) Lipschitz value map (`model.value_map=lipschitz`,
metricattn/attention/layer.py). In the IPN, which has no value projection, it replaces the
identity value: a block is H_new = S H_old A with A = P P^T / sqrt(d_Q). Moon and the IPN
experiments also run the control kind `softmax_g` (IPN_KINDS): softmax with metric-attention's
MLP g on queries and keys.
"""

from __future__ import annotations

import dataclasses

from metricattn.errors import UserError

from metricattn.attention import CONTROL_KINDS, KINDS
from metricattn.attention.layer import VARIANTS

# Kinds of the experiments evaluated for robustness: the three and the variants
# (l2_lipschitz, Kim et al.'s Lipschitz l2).
ROBUSTNESS_KINDS = (*KINDS, *VARIANTS)
# The IPN experiments' kinds: those and the control softmax_g (softmax with metric-attention's
# MLP g on queries and keys: a learned nonlinearity without a distance).
IPN_KINDS = (*ROBUSTNESS_KINDS, *CONTROL_KINDS)


@dataclasses.dataclass(frozen=True)
class Budget:
  """How long and how many: config arguments (after ':'), overrides, seeds, parallel jobs."""
  args: str = ""
  overrides: tuple[str, ...] = ()
  seeds: int = 10
  jobs: int = 1
  note: str = ""
  # fields of metricattn.attacks.Settings, over the experiment's robustness_settings
  robustness_settings: dict = dataclasses.field(default_factory=dict)
  kinds: tuple[str, ...] = ()              # this budget's attention kinds, if not the experiment's
  grid: tuple[str, ...] = ()               # more `--grid` items besides the kinds ('k=v1,v2')


@dataclasses.dataclass(frozen=True)
class Figure:
  """An experiment's own figure: `draw` ("module:function", called with (root, path)) draws
  ROOT/`file`; the report shows it with `alt` text and `caption`."""
  draw: str
  file: str
  alt: str
  caption: str


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  title: str
  config: str                      # path below the repository root
  metric: str                      # headline metric of the report, e.g. test/accuracy
  target: float                    # for "steps to target"
  budgets: dict[str, Budget]
  args: str = ""                   # config arguments shared by every budget
  kinds: tuple[str, ...] = KINDS
  vmap_seeds: bool = False
  robustness: bool = False         # also run metricattn.robustness after training
  # fields of metricattn.attacks.Settings for it (the others at their defaults)
  robustness_settings: dict = dataclasses.field(default_factory=dict)
  figure: Figure | None = None     # the experiment's own figure, if it has one
  anchor: str = ""                 # a published number to compare with, named in the report

  def budget(self, name: str) -> Budget:
    if name not in self.budgets:
      raise UserError(f"experiment {self.name} has no budget {name!r}; allowed: "
                      f"{', '.join(self.budgets)}")
    return self.budgets[name]

  def kinds_of(self, budget: str) -> tuple[str, ...]:
    """The attention kinds `budget` runs: its own, else the experiment's."""
    return self.budget(budget).kinds or self.kinds

  def robustness_of(self, budget: str) -> dict:
    """The robustness settings of `budget`: the experiment's, updated by the budget's."""
    return {**self.robustness_settings, **self.budget(budget).robustness_settings}

  def config_arg(self, budget: str) -> str:
    """`configs/x.py:a=1,b=2` with the shared and the budget's arguments."""
    args = ",".join(a for a in (self.args, self.budget(budget).args) if a)
    return f"{self.config}:{args}" if args else self.config


# The test budgets' robustness: a few hundred images, one strength of each attack besides 0
# and PGD-2 (the quick and full budgets' thousand images, six strengths and PGD-10 took 385
# of the ViT test budget's 525 s).
TEST_ROBUSTNESS = {"max_examples": 200, "pgd_steps": 2, "sigmas": (0.0, 0.2),
                   "epsilons": (0.0, 0.05)}

# Short test runs: every evaluation and checkpoint interval is crossed.
TEST_OVERRIDES = ("train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10")


def controls(quick: Budget) -> dict[str, Budget]:
  """The control budgets of an IPN experiment: `quick` with a residual connection around each
  block (the three kinds), and without propagation (depth 0: the point-wise baseline, the
  same embedding and head; the attention kind is unused)."""
  return {"residual": dataclasses.replace(
              quick, overrides=(*quick.overrides, "model.residual=True"), kinds=KINDS,
              note="control: `quick` with a residual connection around each block (h + "
                   "block(h)), the three kinds"),
          "pointwise": dataclasses.replace(
              quick, overrides=(*quick.overrides, "model.depth=0"), kinds=("softmax",),
              note="control: `quick` without propagation (depth 0), the same embedding and "
                   "head; the attention kind is unused")}


# The learning rates the IPN experiments' `lr` and `full` budgets choose from per kind, on
# val (the configs' Table 2 value is 1e-4; softmax had not levelled off at it in `quick`).
LR_GRID = "optimizer.lr=1e-4,3e-4,1e-3,3e-3"
# Digits has no val split of its own: these training images are held out for the choice.
DIGITS_VAL = 300


def ipn(name: str, dataset: str, title: str, target: float, full_steps: int, full_where: str,
        quick: Budget, source: str = "") -> Experiment:
  """The paper's MNIST comparison (Fig. 3): IPN on images as vectors, on one dataset."""
  val = (f"data.val_size={DIGITS_VAL}",) if dataset == "digits" else ()
  held_out = (f"; {DIGITS_VAL} training images held out as val" if val else "")
  return Experiment(
      name=name, title=title, config="configs/ipn_mnist.py",
      args=f"dataset={dataset}" + (f",source={source}" if source else ""),
      metric="test/accuracy", target=target, vmap_seeds=True, robustness=True,
      kinds=IPN_KINDS,
      robustness_settings={"max_examples": 1000},
      budgets={"full": Budget(f"steps={full_steps}", val, grid=(LR_GRID,),
                              note=f"{full_steps:,} steps, 10 seeds vmapped per kind and "
                                   f"learning rate ({LR_GRID}), each kind's rate chosen on "
                                   f"val{held_out}; {full_where}"),
               "quick": quick, **controls(quick),
               "lr": dataclasses.replace(
                   quick, overrides=(*quick.overrides, *val), grid=(LR_GRID,), seeds=5,
                   kinds=KINDS,
                   note=f"`quick` for the three kinds at each learning rate ({LR_GRID}), 5 "
                        f"seeds, each kind's rate chosen on val{held_out}"),
               "test": Budget("steps=20", TEST_OVERRIDES, seeds=2, note="tests only",
                              robustness_settings=TEST_ROBUSTNESS)})


MOONS_QUICK = Budget("steps=2000", note="2,000 steps (500 epochs, the config's default), 10 "
                    "seeds vmapped per kind; about 2 minutes on the 2-core CPU")

# On features where the graph matters (docs/graph.md, "Which features test the graph"): the
# HKS plus per-vertex noise, which two blocks of propagation can average away and a
# point-wise model cannot; the `full` length, since a single-seed metric run was still rising
# at 2,400 steps.
MESH_DECISIVE = Budget("features=hks_noisy,steps=4000", ("train.eval_every=400",), seeds=5,
                       note="`hks_noisy` features (the HKS plus per-vertex noise), 4,000 "
                            "steps of 2 meshes (about 20 epochs), 5 seeds vmapped per kind, "
                            "evaluated every 400 steps; more than the 100 minutes asked for: "
                            "the committed run took 43 minutes each for l2 and metric (1.6 "
                            "vmapped steps/s) and longer for softmax (1.1) on the 2-core CPU "
                            "beside other runs (docs/graph.md); it resumes from its "
                            "checkpoints, so it can be run in several sittings")

EXPERIMENTS = {e.name: e for e in [
    Experiment(
        name="moons", title="Moon, IPN (paper Fig. 4)", config="configs/moons_ipn.py",
        metric="test/accuracy", target=0.95, vmap_seeds=True, robustness=True,
        kinds=IPN_KINDS,
        robustness_settings={"sigmas": (0.0, 0.1, 0.2, 0.3, 0.5, 0.8),
                             "epsilons": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)},
        budgets={
            "full": Budget("steps=10000", note="10,000 steps (2,500 epochs), 10 seeds "
                           "vmapped per kind; the paper gives no length; a few minutes on "
                           "a CPU, no GPU needed"),
            "quick": MOONS_QUICK, **controls(MOONS_QUICK),
            "test": Budget("steps=20", TEST_OVERRIDES, seeds=2, note="tests only")}),
    ipn("ipn_mnist", "mnist", "MNIST, IPN (paper Fig. 3)", 0.95, 27_500, "50 epochs; one GPU",
        Budget("steps=1000", ("train.eval_every=250", "train.checkpoint_every=500"),
               note="1,000 steps (about 2 epochs), 10 seeds vmapped per kind; needs MNIST "
                    "prepared for tensorflow-datasets (online once)")),
    ipn("ipn_fashion_mnist", "fashion_mnist",
        "Fashion-MNIST, IPN (paper Fig. 3 on Fashion-MNIST)", 0.8, 27_500,
        "50 epochs; one GPU",
        Budget("steps=1000", ("train.eval_every=250", "train.checkpoint_every=500"),
               note="1,000 steps (about 2 epochs), 10 seeds vmapped per kind; offline "
                    "(Debian's dataset-fashion-mnist)")),
    ipn("ipn_digits", "digits", "Digits 8x8, IPN (paper Fig. 3 on scikit-learn digits)", 0.9, 10_000,
        "about 700 epochs; a CPU suffices (the committed run: 84 minutes on the 2-core "
        "CPU beside another run, docs/results.md)",
        Budget("steps=1500", ("train.eval_every=100", "train.checkpoint_every=500"),
               note="1,500 steps (about 100 epochs), 10 seeds vmapped per kind; offline")),
    Experiment(
        name="multi30k", title="Multi30k EN-DE, Transformer (paper Fig. 6)",
        config="configs/multi30k_transformer.py", metric="test/bleu", target=30.0,
        budgets={
            "full": Budget("schedule=paper", note="the paper's optimizer, 1,000 epochs, 10 "
                           "seeds, 6+6 layers d_model 512; weeks of GPU time in total "
                           "(see the config's cost estimate)"),
            "quick": Budget("schedule=fast,epochs=1,batch=64",
                            ("model.num_layers=2", "model.d_model=128", "model.qk_dim=128",
                             "model.d_mlp=64", "model.d_ff=256", "model.num_heads=4",
                             "model.dropout=0.0", "data.vocab_size=2000",
                             "data.max_len=48", "model.max_len=48"),
                            seeds=3,
                            note="OURS, not the paper's model: 2+2 layers d_model 128, one "
                                 "epoch of the `fast` schedule, 3 seeds; needs the Multi30k "
                                 "files in data/multi30k"),
            "test": Budget("schedule=fast,epochs=0.01,batch=32",
                           ("model.num_layers=1", "model.d_model=32", "model.qk_dim=32",
                            "model.d_mlp=16", "model.d_ff=64", "model.num_heads=2",
                            "data.vocab_size=300", "data.max_len=24", "model.max_len=24"),
                           seeds=2, note="tests only")}),
    Experiment(
        name="l10n_translation",
        title="Debian message catalogues EN-DE, Transformer (ours: real language offline, "
              "paper Fig. 6's comparison)",
        config="configs/l10n_translation.py", metric="test/bleu", target=20.0,
        budgets={
            "full": Budget("schedule=paper", note="the paper's 6+6-layer d_model 512 "
                           "Transformer and optimizer, 1,000 epochs, 10 seeds; GPU time"),
            "quick": Budget("model=small,schedule=fast,epochs=1,batch=64,evals=4",
                            ("optimizer.warmup_steps=100",), seeds=2, jobs=2,
                            note="OURS, not the paper's model: 2+2 layers d_model 128, one "
                                 "epoch of the `fast` schedule with 100 warm-up steps, 2 "
                                 "seeds"),
            "test": Budget("model=small,schedule=fast,epochs=0.1,batch=16,evals=1,"
                           "train_pairs=1000",
                           ("model.num_layers=1", "model.d_model=32", "model.qk_dim=32",
                            "model.d_mlp=16", "model.d_ff=64", "model.num_heads=2",
                            "data.vocab_size=256", "data.max_len=16", "model.max_len=16",
                            "optimizer.warmup_steps=2"),
                           seeds=2, jobs=2,
                           note="tests only; on the real corpus a smoke test of 1,000 "
                                "training pairs (about 2 min on 2 cores)")}),
    Experiment(
        name="translation_synthetic",
        title="Synthetic translation, Transformer (ours: an offline stand-in for Multi30k)",
        config="configs/translation_synthetic.py", metric="test/bleu", target=90.0,
        budgets={
            "full": Budget("steps=2000", note="2,000 steps, 10 seeds"),
            "quick": Budget("steps=400", seeds=5, jobs=2,
                            note="400 steps (the config's default), 5 seeds"),
            "test": Budget("steps=20", ("train.eval_every=10", "train.checkpoint_every=10"),
                           seeds=2, note="tests only")}),
    Experiment(
        name="mesh_seg",
        title="Human-mesh segmentation, IPN with graph-masked attention (paper Fig. 5, "
              "procedural bodies)",
        config="configs/mesh_seg.py", metric="test/accuracy", target=0.8, vmap_seeds=True,
        figure=Figure("metricattn.mesh_figure:segmentation_figure", "segmentation.png",
                      "segmentation of 4 test meshes, seed 0",
                      "Face labels of the first 4 test meshes, front view: the ground truth "
                      "(top row) and the predictions of seed 0 of each group (one row per "
                      "group); each panel's title gives that mesh's face accuracy."),
        budgets={
            "full": Budget("steps=4000", note="4,000 steps of 2 meshes (about 20 epochs), 10 "
                           "seeds vmapped per kind"),
            "quick": Budget("steps=400", seeds=3,
                            note="400 steps of 2 meshes (about 2 epochs), 3 seeds vmapped "
                                 "per kind; offline (the generator)"),
            "pointwise": Budget("steps=400,depth=0", seeds=3, kinds=("softmax",),
                                note="the point-wise baseline of `quick`: no propagation "
                                     "(depth 0), the same features, embedding and head; the "
                                     "attention kind is unused"),
            "paper_scale": Budget("steps=400", ("model.scale=1.0",), seeds=3,
                                  note="`quick` with the paper's logit scale 1 (Algorithm "
                                       "1) instead of 1/sqrt(d_Q)"),
            "decisive": MESH_DECISIVE,
            "decisive_pointwise": dataclasses.replace(
                MESH_DECISIVE, args=f"{MESH_DECISIVE.args},depth=0", kinds=("softmax",),
                note="the point-wise control of `decisive`: no propagation (depth 0), the "
                     "same features, embedding and head; the attention kind is unused"),
            "test": Budget("steps=4", ("data.num_train=8", "data.num_test=4",
                                       "data.batch_size=2", "train.log_every=2",
                                       "train.eval_every=4", "train.checkpoint_every=2"),
                           seeds=2, note="tests only")}),
    Experiment(
        name="lra_listops",
        title="Long Range Arena ListOps, Transformer encoder (Tay et al. 2021)",
        config="configs/lra_listops.py", metric="test/accuracy", target=0.3637,
        anchor="LRA's published vanilla Transformer on ListOps: 36.37% test accuracy (Tay et "
               "al. 2021, Long Range Arena, Table 1), at LRA's setting, which is this "
               "experiment's `full` budget; the target is that number. Other budgets are "
               "ours: shorter sequences and a smaller model, not comparable with it",
        budgets={
            "full": Budget("size=lra", note="LRA's ListOps setting: 96,000 examples of "
                           "501-1,999 tokens, 6 layers of width 512 with 8 heads, 5,000 "
                           "steps of batch 32 (rsqrt schedule), 10 seeds; one GPU"),
            "quick": Budget("size=cpu", seeds=2, jobs=2,
                            note="OURS, not LRA's setting: 20,000 examples of 51-149 tokens, "
                                 "2 layers of width 64 with 4 heads, 1,500 steps of batch 32, "
                                 "2 seeds; offline (the generator)"),
            "decisive": Budget("size=cpu", ("train.eval_every=250",), seeds=5, jobs=2,
                               note="OURS: `quick` with 5 seeds, evaluated every 250 steps "
                                    "(its training loss is flat from step 600 on); about 95 "
                                    "minutes on a quiet 2-core CPU, from the quick budget's "
                                    "2.1 steps/s per run (2 at a time, Intel Xeon); the "
                                    "committed run took 142 minutes beside other work "
                                    "(docs/lra.md)"),
            "test": Budget("size=cpu,steps=20",
                           ("data.num_train=64", "data.num_val=16", "data.num_test=16",
                            "data.min_length=8", "data.max_length=40", "data.bucket=8",
                            "model.num_layers=1", "model.num_heads=2", "model.d_model=16",
                            "model.qk_dim=16", "model.d_mlp=16", "model.d_ff=32",
                            "eval.batch_size=16", *TEST_OVERRIDES),
                           seeds=2, note="tests only")}),
    Experiment(
        name="vit_fashion_mnist", title="Fashion-MNIST, ViT (ours)",
        config="configs/vit_image.py", args="dataset=fashion_mnist", metric="test/accuracy",
        target=0.80, robustness=True, robustness_settings={"max_examples": 1000},
        kinds=ROBUSTNESS_KINDS,
        budgets={
            "full": Budget("epochs=30,variant=Ti/4", note="ViT-Ti/4, 30 epochs, 10 seeds; "
                           "one GPU"),
            "quick": Budget("epochs=1,batch=32",
                            ("train.eval_every=286", "train.checkpoint_every=286"), seeds=3,
                            robustness_settings={"max_examples": 500, "pgd_steps": 5},
                            note="ViT-Mu/7, one epoch at batch 32 (1,718 steps), 3 seeds; "
                                 "robustness on 500 test images with PGD-5"),
            "decisive": Budget("epochs=5,batch=32",
                               ("train.eval_every=859", "train.checkpoint_every=1718"),
                               seeds=5, jobs=2, kinds=KINDS,
                               robustness_settings={"max_examples": 500, "pgd_steps": 5},
                               note="ViT-Mu/7, 5 epochs at batch 32 (8,590 steps, the cosine "
                                    "schedule run to zero), 5 seeds, the three kinds, 2 runs "
                                    "at a time; evaluated every half epoch; robustness on 500 "
                                    "test images with PGD-5"),
            "test": Budget("epochs=0.01", ("train.log_every=1", "eval.batch_size=200"),
                           seeds=2, jobs=2, robustness_settings=TEST_ROBUSTNESS,
                           note="tests only")}),
]}


def get(name: str) -> Experiment:
  if name not in EXPERIMENTS:
    raise UserError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
  return EXPERIMENTS[name]
