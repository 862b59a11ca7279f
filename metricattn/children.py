"""Processes a launcher starts (the sweep's runs, the study's workers and trials): they never
outlive it, and a signal to the launcher reaches them once.

`spawn` starts a child in a session of its own (so that Ctrl-C in a terminal reaches the
launcher alone, which forwards it once: a second SIGINT would stop a run before its
checkpoint) and, on Linux, with PR_SET_PDEATHSIG: when the launcher dies, even by SIGKILL,
the child gets SIGTERM, writes a checkpoint and stops. `Forwarding` is the launcher's side:
while active, SIGTERM and SIGINT are passed on to every live child and recorded in
`received`, so the launcher starts nothing new, waits for its children's checkpoints and
exits 128 + the signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading


def die_with_parent() -> None:
  """In a child, before exec (Linux): SIGTERM when the parent dies."""
  import ctypes
  try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


class Forwarding:
  """While active (in the main thread): SIGTERM and SIGINT are forwarded to the live children
  started with `spawn` and recorded in `received` (the first signal's number)."""

  def __init__(self):
    self.children: set[subprocess.Popen] = set()
    self.received: int | None = None
    self.lock = threading.Lock()
    self.old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self.old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    return self

  def __exit__(self, *exc):
    for s, handler in self.old.items():
      signal.signal(s, handler)

  def handle(self, signum, frame) -> None:
    self.received = self.received or signum
    with self.lock:
      live = [p for p in self.children if p.poll() is None]
    for p in live:
      try:
        p.send_signal(signum)
      except OSError:  # it has just ended
        pass

  def spawn(self, cmd: list[str], **kwargs) -> subprocess.Popen | None:
    """Starts `cmd` as a child that dies with this process; None once a signal was received
    (nothing new starts while stopping)."""
    with self.lock:
      if self.received is not None:
        return None
      proc = subprocess.Popen(cmd, start_new_session=True, **kwargs,
                              preexec_fn=die_with_parent if sys.platform == "linux" else None)
      self.children.add(proc)
    return proc

  def wait(self, proc: subprocess.Popen) -> int:
    """Waits for a child (through signals to this process) and forgets it."""
    rc = proc.wait()
    with self.lock:
      self.children.discard(proc)
    return rc
