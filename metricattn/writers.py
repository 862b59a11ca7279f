"""Logging fans out from here: metrics.jsonl, the console (progress bar on a terminal,
plain lines otherwise) and wandb when `config.wandb.mode` is online or offline. Of the
processes of a multi-process run only one (process 0) writes: the others' writers are
inactive."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from metricattn.fileio import cut_jsonl

WANDB_MODES = ("disabled", "offline", "online")


def reachable_wandb_mode(workdir: Path, say, timeout: float = 3.0) -> str:
  """'online' when an API key is set and the wandb server answers within `timeout` seconds;
  otherwise 'offline', said in one line (the run is synced later with `wandb sync`)."""
  import netrc
  import socket
  from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
  from urllib.parse import urlparse
  url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
  host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
  try:
    key = os.environ.get("WANDB_API_KEY") or netrc.netrc().authenticators(host)
  except (OSError, netrc.NetrcParseError):
    key = None
  why = None if key else "no wandb API key (WANDB_API_KEY or `wandb login`)"
  if why is None:
    # In a thread, so that a hanging DNS lookup (not covered by the socket timeout) cannot
    # block training either.
    pool = ThreadPoolExecutor(1)
    try:
      pool.submit(lambda: socket.create_connection((host, port), timeout).close()).result(
          timeout)
    except (OSError, FutureTimeout):
      why = f"{host}:{port} did not answer within {timeout:g} s"
    pool.shutdown(wait=False)
  if why is None:
    return "online"
  say(f"wandb: {why}; logging offline to {workdir / 'wandb'} instead; upload it later with "
      f"`wandb sync {workdir / 'wandb'}/offline-run-*`")
  return "offline"


class MetricWriter:
  """Writes `{"step", "split", metric...}` records; `resume_step` drops records after it.
  An inactive writer (not process 0) writes nothing."""

  def __init__(self, workdir: Path, config, total_steps: int, resume_step: int,
               progress: bool = True, active: bool = True):
    self.path = workdir / "metrics.jsonl"
    self.total, self.start, self.t0 = total_steps, resume_step, time.perf_counter()
    self.active, self.bar, self.wandb = active, None, None
    mode = config.wandb.mode
    if mode not in WANDB_MODES:
      from metricattn.errors import UserError
      raise UserError(f"unknown wandb.mode {mode!r}; allowed: {', '.join(WANDB_MODES)}")
    if not active:
      return
    cut_jsonl(self.path, lambda r: r["step"] <= resume_step)
    if progress and sys.stderr.isatty():
      from tqdm import tqdm
      self.bar = tqdm(total=total_steps, initial=resume_step, unit="step", dynamic_ncols=True)
    if mode == "online":
      mode = reachable_wandb_mode(workdir, self.info)
    if mode != "disabled":
      import wandb  # lazily: heavy, and not needed unless asked for
      # A sweep's trials set wandb.group (the study) and wandb.name (their parameters).
      self.wandb = wandb.init(project=config.wandb.project, mode=mode,
                              name=config.wandb.get("name") or workdir.name,
                              group=config.wandb.get("group"), dir=str(workdir),
                              config=config.to_dict(), resume="allow")

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.active:
      return
    record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self.wandb is not None:
      self.wandb.log({f"{split}/{k}": v for k, v in metrics.items()}, step=step)
    text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    self.info(f"step {step} {split}: {text}{self.pace(step) if split == 'train' else ''}")

  def pace(self, step: int) -> str:
    """' (12.3 steps/s, 45 s left)': the speed since this process started (compilation
    included), and the time left at that speed."""
    seconds = time.perf_counter() - self.t0
    if step <= self.start or seconds <= 0:
      return ""
    rate = (step - self.start) / seconds
    return f" ({rate:.1f} steps/s, {(self.total - step) / rate:.0f} s left)"

  def advance(self, steps: int) -> None:
    if self.bar is not None:
      self.bar.update(steps)

  def info(self, line: str) -> None:
    if not self.active:
      return
    if self.bar is not None:
      self.bar.write(line, file=sys.stderr)
    else:
      print(line, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.wandb is not None:
      self.wandb.finish()
