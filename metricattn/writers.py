"""Logging fans out from here: metrics.jsonl, the console (progress bar on a terminal,
plain lines otherwise) and wandb when `config.wandb.mode` is online or offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

WANDB_MODES = ("disabled", "offline", "online")


def read_jsonl(path: str | Path) -> list[dict]:
  path = Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
  """Writes `{"step", "split", metric...}` records; `resume_step` drops records after it."""

  def __init__(self, workdir: Path, config, total_steps: int, resume_step: int,
               progress: bool = True):
    self.path = workdir / "metrics.jsonl"
    kept = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
    self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    self.bar = None
    if progress and sys.stderr.isatty():
      from tqdm import tqdm
      self.bar = tqdm(total=total_steps, initial=resume_step, unit="step", dynamic_ncols=True)
    self.wandb = None
    mode = config.wandb.mode
    if mode not in WANDB_MODES:
      from metricattn.errors import UserError
      raise UserError(f"unknown wandb.mode {mode!r}; allowed: {', '.join(WANDB_MODES)}")
    if mode != "disabled":
      import wandb  # lazily: heavy, and not needed unless asked for
      self.wandb = wandb.init(project=config.wandb.project, name=workdir.name, mode=mode,
                              dir=str(workdir), config=config.to_dict(), resume="allow")

  def write(self, step: int, split: str, metrics: dict) -> None:
    record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self.wandb is not None:
      self.wandb.log({f"{split}/{k}": v for k, v in metrics.items()}, step=step)
    text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    self.info(f"step {step} {split}: {text}")

  def advance(self, steps: int) -> None:
    if self.bar is not None:
      self.bar.update(steps)

  def info(self, line: str) -> None:
    if self.bar is not None:
      self.bar.write(line, file=sys.stderr)
    else:
      print(line, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.wandb is not None:
      self.wandb.finish()
