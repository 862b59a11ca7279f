"""The report of `python -m metricattn.theory trained` (see `metricattn.theory.trained` for what
is measured): the command, its tables and the text around them, written to OUT/report.md
and OUT/results.json with two figures. It analyses finished runs of the `moons` experiment
and trains none: when runs are missing it names the `metricattn.experiment` command that
makes them."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from metricattn import registry
from metricattn import runs as runs_lib
from metricattn.errors import UserError
from metricattn.fileio import write_atomic
from metricattn.reporting import machine_description, markdown_table
from metricattn.theory.trained import (CLUSTER_TOL, EIG_TOL, EXPERIMENT, RANK_TOL, RunAnalysis,
                                       analyse_workdir, layer_matrices, workdirs)


def experiment_command(root: Path, budget: str) -> str:
  return shlex.join(["python", "-m", "metricattn.experiment", EXPERIMENT, "--budget", budget,
                     "--root", str(root), "--no-robustness"])


def check_runs(root: Path, budget: str) -> dict[tuple[str, int], Path]:
  """The workdirs of the experiment's runs in root; a UserError naming the command that
  makes them when any is missing or unfinished, or when root holds another budget."""
  runs = workdirs(root, budget)
  missing = [w for w in runs.values() if not runs_lib.finished(w)]
  recorded = (runs_lib.load_experiment(root) or {}).get("budget")
  if recorded not in (None, budget):
    raise UserError(f"{root} holds the {EXPERIMENT} experiment's budget {recorded!r}, not "
                    f"{budget!r}: pass --budget {recorded} or another --runs root")
  if missing:
    raise UserError(f"{len(missing)} of the {len(runs)} runs this analysis needs are missing "
                    f"or unfinished in {root} (e.g. {missing[0]}); make them with "
                    f"`{experiment_command(root, budget)}`, then rerun this command")
  return runs




# ---------------------------------------------------------------- report

def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m metricattn.theory trained",
                              description="Per-layer asymmetry and clustering of trained "
                              "Moon IPNs (issue 6, section 3).")
  p.add_argument("--runs", type=Path, default=None, metavar="ROOT",
                 help=f"root of the {EXPERIMENT} experiment's finished runs (default "
                 f"runs/experiments/{EXPERIMENT}/BUDGET; the error names the command that "
                 "makes missing ones)")
  p.add_argument("--budget", default="quick",
                 help=f"budget of the {EXPERIMENT} experiment: "
                 f"{', '.join(registry.get(EXPERIMENT).budgets)} (quick: 2,000 steps)")
  p.add_argument("--out", default="results/theory/trained",
                 help="output directory (report.md, results.json, PNGs)")
  return p.parse_args(argv)


def g(v: float | None, digits: int = 3) -> str:
  return "-" if v is None else f"{v:.{digits}g}"


def mean_range(vals: list[float | None], digits: int = 3) -> str:
  vals = [v for v in vals if v is not None]
  if not vals:
    return "-"
  return f"{g(np.mean(vals), digits)} [{g(min(vals), 2)}, {g(max(vals), 2)}]"


def per_seed(vals: list) -> str:
  return " ".join(str(v) for v in vals)


def group(results: list[RunAnalysis], kind: str, state: str) -> list[RunAnalysis]:
  return [r for r in results if r.kind == kind and r.state == state]


def column(runs: list[RunAnalysis], layer: int, field: str) -> list:
  return [getattr(r.layers[layer], field) for r in runs]


def asymmetry_table(results: list[RunAnalysis], kinds: list[str]) -> str:
  rows = []
  for kind in kinds:
    init, done = group(results, kind, "init"), group(results, kind, "trained")
    for layer in range(1, len(done[0].layers)):
      rows.append([kind, layer] + [mean_range(column(runs, layer, f))
                                   for f in ("asym", "neg", "param_asym")
                                   for runs in (init, done)]
                  + [mean_range(column(done, layer, "in_aniso"), 2)])
  return "\n".join(markdown_table(
      ["kind", "layer", "asym, init", "asym, trained", "neg, init", "neg, trained",
       "param asym, init", "param asym, trained", "input sigma2/sigma1 (centred), trained"],
      rows))


def softmax_sentence(results: list[RunAnalysis]) -> str:
  """Trained softmax layers whose symmetric logit part is mostly negative, and where they
  send their attention."""
  layers = [l for r in results if r.kind == "softmax" and r.state == "trained"
            for l in r.layers[1:]]
  if not layers:
    return ""
  anti = [l for l in layers if l.neg > 0.5]
  rest = [l for l in layers if l.neg <= 0.5]
  mean = lambda ls: g(np.mean([l.same_class for l in ls]), 2) if ls else "-"
  return (f"Trained softmax layers: in {len(anti)} of {len(layers)} (run, layer) pairs the "
          "symmetric part of C is mostly negative (neg > 0.5; at neg = 1, C = -G G^T and the "
          "logits grow with ||g_i - g_j||^2: a point attends to points far from it in that "
          "embedding, which the dot product's nearest-point map of section 2 of the theory "
          f"report allows). Their mean same-class weight is {mean(anti)}, against "
          f"{mean(rest)} in the other softmax layers.\n")


def cluster_table(results: list[RunAnalysis], kinds: list[str]) -> str:
  rows = []
  for kind in kinds:
    for state in ("init", "trained"):
      runs = group(results, kind, state)
      for layer in range(len(runs[0].layers)):
        clusters = [f"{c}({m})" for c, m in zip(column(runs, layer, "clusters"),
                                                column(runs, layer, "mixed"))]
        near = column(runs, layer, "near_one")
        rows.append([kind, state, layer, per_seed(column(runs, layer, "rank")),
                     per_seed(clusters), per_seed(near) if layer else "-",
                     mean_range(column(runs, layer, "lambda2"), 2),
                     mean_range(column(runs, layer, "split"), 2),
                     mean_range(column(runs, layer, "same_class"), 2),
                     mean_range([sv[1] for sv in column(runs, layer, "sv")], 2),
                     mean_range(column(runs, layer, "spread"), 2)])
  return "\n".join(markdown_table(
      ["kind", "params", "layer", "rank", "clusters (mixed)", "#eig(S) near 1", "lambda2",
       "split vs class", "same-class weight", "sigma2/sigma1", "spread"], rows))


def accuracy_table(results: list[RunAnalysis], kinds: list[str]) -> str:
  rows = []
  for kind in kinds:
    done, init = group(results, kind, "trained"), group(results, kind, "init")
    rows.append([kind, mean_range([r.run_accuracy for r in done]),
                 per_seed([g(r.run_accuracy) for r in done]),
                 mean_range([r.set_accuracy for r in done]),
                 mean_range([r.set_accuracy for r in init])])
  return "\n".join(markdown_table(
      ["kind", "run test accuracy (train_context)", "per seed",
       "test accuracy in the 200-point set", "same, initial params"], rows))


def eig_sentence(results: list[RunAnalysis]) -> str:
  """How often #eig(S) near 1 equals the number of clusters the layer forms."""
  pairs = [(l.near_one, l.clusters) for r in results if r.state == "trained"
           for l in r.layers if l.near_one is not None]
  equal = sum(a == b for a, b in pairs)
  fewer = sum(a < b for a, b in pairs)
  return (f"Trained layers: in {equal} of {len(pairs)} (run, layer) pairs the number of "
          f"eigenvalues of S within {EIG_TOL} of 1 equals the number of clusters of the "
          f"layer's output, in {fewer} it is smaller, in {len(pairs) - equal - fewer} "
          "larger. With two trained layers the features contract only partly (see the spread), "
          "so the cluster count at a fixed radius counts partly contracted groups; lambda2 "
          "and the split column say more about the groups S is forming.")


def headline(results: list[RunAnalysis], kinds: list[str]) -> str:
  lines = ["## Headline numbers (this run)", ""]
  last = len(results[0].layers) - 1
  per_layer = lambda runs, f, d=3: ", ".join(
      f"layer {l}: {mean_range(column(runs, l, f), d)}" for l in range(1, last + 1))
  for kind in kinds:
    done, init = group(results, kind, "trained"), group(results, kind, "init")
    lines.append(
        f"- **{kind}**: test accuracy {mean_range([r.run_accuracy for r in done])}. "
        f"Asymmetry trained {per_layer(done, 'asym')} (initial {per_layer(init, 'asym')}); "
        f"negative mass trained {per_layer(done, 'neg')}. Same-class attention weight "
        f"{per_layer(done, 'same_class', 2)}; lambda2 {per_layer(done, 'lambda2', 2)}. "
        f"After layer {last}: clusters per seed {per_seed(column(done, last, 'clusters'))} "
        f"(mixed {per_seed(column(done, last, 'mixed'))}), #eig(S) near 1 "
        f"{per_seed(column(done, last, 'near_one'))}, rank "
        f"{per_seed(column(done, last, 'rank'))}.")
  errs = [l.prop_err for r in results for l in r.layers if l.prop_err is not None]
  if errs:
    lines.append(f"- Check: the matrix S analysed reproduces every block's output, "
                 f"max |S H_(l-1) - H_l| / max |H_l| = {g(max(errs), 2)}.")
  return "\n".join(lines) + "\n"


def header(cmd: str, seconds: float, analysed: int, root: Path, budget: str) -> str:
  exp = registry.get(EXPERIMENT)
  date = datetime.datetime.now().astimezone().strftime("%a %d %b %Y %H:%M:%S %Z")
  return "\n".join([
      "# Trained Moon IPNs: how far the learned attention is from a metric kernel, and its "
      "clustering (issue 6, section 3)", "",
      f"- Command: `{cmd}`",
      f"- Machine: {machine_description()}",
      f"- Date: {date}; wall time {seconds:.0f} s ({analysed} finished runs analysed)",
      f"- Runs: the `{EXPERIMENT}` experiment, budget `{budget}` ({exp.budget(budget).note}), "
      f"in `{root}` (`{experiment_command(root, budget)}` trains them): "
      f"`{exp.config_arg(budget)}` (paper Table 2 settings: IPN width 16, depth 2, one head, "
      "d_Q = d_mlp = 10, scale 1/sqrt(d_Q), no skip; the seed also draws the data set)", ""])


METHOD = f"""\
## Method

Each run is analysed on one set of 200 points: its 100 test points and its 100 context points
(the training subset its evaluation attends to), as one set without a mask, all points
attending to each other as the 100 training points of a set do in training. Layer l maps
H_(l-1) to H_l = S_l H_(l-1) (H_0 the embedding). "init" is the same analysis with the run's
initial parameters.

- **asym** = ||A||_F / ||C||_F with C = J L J the logits of the layer (the project's float32
  logits on all 200 x 200 pairs) with row and column offsets removed (J = I - 11^T/n) and
  A = (C - C^T)/2. Softmax ignores row offsets and a per-key bias is not an asymmetry, so
  only C is meaningful (the raw exp(L) of an l2 layer is not symmetric: its logits are the
  bias form s (2 q.k - |k|^2)). asym = 0 iff S = D^-1 K with K symmetric, i.e. S is a
  reversible Markov matrix (pi_i S_ij = pi_j S_ji); asym is in [0, 1]. l2 and metric
  attention are symmetric by construction, so their values measure float32 rounding only.
- **neg** = sum |negative eigenvalues| / sum |eigenvalues| of (C + C^T)/2. A symmetric C is,
  up to offsets, -s times squared Euclidean distances between embedded points iff it is
  positive semidefinite (Schoenberg; classical MDS). asym = neg = 0 means S is exactly a
  row-normalised exp(-s ||phi(x_i) - phi(x_j)||^2): a metric kernel on these points.
- **param asym** (softmax): ||A(M)|| / ||M|| for M = W_Q W_K^T; C = s H_c M H_c^T, so asym is
  this antisymmetry seen through the centred features H_c.
- Clustering as in section 3 of the theory report: rank = singular values of H_l above
  {RANK_TOL} of the largest; clusters = components of ||h_i - h_j|| < {CLUSTER_TOL} r0 (r0 the
  RMS radius of H_0), (mixed) = how many of them hold both classes; #eig(S) near 1 =
  eigenvalues of S_l within {EIG_TOL} of 1 (S_l is strictly positive, so the eigenvalue 1
  itself is simple); lambda2 = second largest |eigenvalue| of S_l (near 1: S_l nearly splits
  the set into two closed groups); split vs class = agreement of the sign of lambda2's right
  eigenvector (real part) with the classes, 0.5 to 1; same-class weight = mean over points
  of the attention weight on points of their own class (0.5 for class-blind attention);
  sigma2/sigma1 = second singular value of H_l over the first; spread = RMS radius over r0.
  Without a value projection rank(H_l) <= rank(H_0) <= 3 (an affine image of the 2-D
  input; 2 at initialisation, where the embedding bias is 0).

Cells "a [b, c]" are the mean and range over seeds; space-separated cells list the seeds in
order.
"""


FIGURE_NOTE = """\
First figure: one line per run, solid trained, dashed initial parameters. Second figure (first
seed): rows and columns sorted by class, then by the first input coordinate; S in log colours;
A(C) the antisymmetric part of the centred logits of layer 1 (for l2 and metric, float32
rounding); right, the features after the last layer on their first two principal components
(filled: context points, open: test points).
"""

ANISO_NOTE = """\
The input of every layer is an affine image of the 2-D data, so its centred features H_c have
rank 2: with H_c = U diag(s1, s2) V^T and N = V^T M V (2 x 2), the antisymmetric part of
C = s H_c M H_c^T is s s1 s2 A(N), the symmetric part up to s s1^2 sym(N). A softmax layer's
asym therefore shrinks with the centred s2/s1 of its input (last column), whatever M is: a
layer fed nearly one-dimensional features cannot be far from symmetric.
"""


def write_report(out: Path, text: str, results: list[RunAnalysis], meta: dict) -> None:
  write_atomic(out / "report.md", text)
  js = dict(meta, runs=[dataclasses.asdict(r) for r in results])
  write_atomic(out / "results.json", json.dumps(js, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
  from metricattn.cli import enable_compilation_cache, run
  args = parse_args(argv)
  cmd = " ".join(["python -m metricattn.theory trained"]
                 + [shlex.quote(a) for a in (sys.argv[2:] if argv is None else argv)])
  enable_compilation_cache()
  run(report, args.runs or Path("runs/experiments") / EXPERIMENT / args.budget, args.budget,
      Path(args.out), cmd)


def report(root: Path, budget: str, out: Path, cmd: str) -> None:
  """Analyses the finished runs of the experiment in root and writes OUT/report.md."""
  from metricattn.theory import figures
  t0 = time.time()
  runs = check_runs(root, budget)
  out.mkdir(parents=True, exist_ok=True)
  kinds = list(dict.fromkeys(k for k, _ in runs))
  seeds = sorted({s for _, s in runs})
  print(f"[trained] analysing {len(runs)} runs", flush=True)
  results = [r for w in runs.values() for r in analyse_workdir(w)]
  figures.trained_stats(results, str(out / "trained.png"))
  mats = {k: layer_matrices(runs[k, seeds[0]]) for k in kinds}
  figures.trained_matrices(mats, str(out / "trained_attention.png"),
                           f"trained IPNs, seed {seeds[0]}: 200-point analysis set")
  seconds = time.time() - t0
  text = "\n".join([
      header(cmd, seconds, len(runs), root, budget),
      headline(results, kinds), METHOD,
      "## Accuracy\n", accuracy_table(results, kinds), "",
      "The analysis set differs from the run's evaluation only in that test points also see "
      "each other; the accuracies show how far that changes the predictions.\n",
      "## Asymmetry and metric-ness per layer\n", asymmetry_table(results, kinds), "",
      ANISO_NOTE, softmax_sentence(results),
      "## Clustering per layer\n", cluster_table(results, kinds), "", eig_sentence(results),
      "", "![per-layer statistics](trained.png)\n",
      f"![attention matrices, seed {seeds[0]}](trained_attention.png)\n",
      FIGURE_NOTE])
  write_report(out, text, results, dict(
      command=cmd, seconds=seconds, experiment=EXPERIMENT, budget=budget, root=str(root),
      seeds=seeds, kinds=kinds, workdirs={f"{k}/{s}": str(w) for (k, s), w in runs.items()}))
  print(f"[trained] wrote {out}/report.md in {seconds:.0f} s", flush=True)
