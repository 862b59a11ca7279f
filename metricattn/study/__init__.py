"""Optuna studies: searches over config values by workers that share one storage.

  python -m metricattn.sweep --config=configs/moons_ipn.py --root runs/moons-tpe \
      --space 'optimizer.lr=loguniform(1e-4,1e-2)' --space 'model.depth=int(1,4)' \
      --space 'model.attention=choice(softmax,l2,metric)' --sampler tpe --trials 20 \
      --seeds 0:3 --objective test/accuracy --direction max \
      [--storage sqlite:///runs/moons-tpe.db] [--study NAME] [--workers 2] [--pruner median]

`metricattn.sweep` hands every search (`--space`, `--sampler`, `--storage`, ...) to
`launch.run_study`, which checks everything, records ROOT/study.json and works (or starts
`--workers` local workers). A search space (`space.py`) is one `KEY=DISTRIBUTION` per
`--space` (or per line of `--space-file`): `choice(a,b,...)`, `int(low,high[,step])`,
`uniform(low,high)`, `loguniform(low,high)`; KEY is a config argument (`attention`) or a
dotted config value (`optimizer.lr`), as in `--grid`, and every key and bound is checked by
building the config before any trial starts. `--sampler grid` (Optuna's GridSampler) takes
`choice` and `int`.

A worker (`worker.py`) is a loop: retry the trials whose worker died, stop when the study
has `--trials` trials (finished, running or failed; a retried trial counts once) and none
runs elsewhere, else ask Optuna for a trial and train it. Any number of workers, on any
machines, join one study by running the same command (`--storage`, `storage.py`: a journal
file path, the default ROOT/optuna.journal, or an SQLAlchemy URL: sqlite:///,
postgresql://, mysql+pymysql://); `--workers K` starts K local ones.

A trial trains in its own process (`python -m metricattn.study.trial SPEC`, started by the
worker; `trial.py`) in ROOT/<key>=<value>/.../seed=<s>, the layout of `--grid`: an ordinary
run directory per seed whose config.json also holds `sweep` (study, trial number,
parameters); its value is the mean over its seeds of the objective in their summary.json.
The directory follows from the parameters alone, so a trial run again (its worker was
killed: no heartbeat for `--heartbeat`*3 seconds) resumes from its checkpoint, and a trial
whose runs have all finished reuses them. While a trial trains, its worker reads the
objective's evaluations from metrics.jsonl, reports them to Optuna and, with
`--pruner median|hyperband`, stops a pruned trial (SIGTERM: its process writes a checkpoint
and exits).

`python -m metricattn.report ROOT` adds `section.study_section`: the best trials, Optuna's
optimisation history and parameter importances as PNGs.

Modules: `space` (search spaces, objectives), `storage` (storages, samplers, pruners, the
study and its ROOT/study.json), `worker` (the worker loop), `launch` (what `--space` makes
of `metricattn.sweep`), `trial` (one trial's process), `section` (the report's section).
"""
