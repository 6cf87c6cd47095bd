"""Resident memory of this process from /proc/self (Linux), for the benchmarks
that report peak memory (bench_llm.py, experiments/smollm2_prune/bench_prune.py).

Standard library only, so that a benchmark's worker running in another
environment (without jax) can import it too. Off Linux every reading is nan.
"""

from __future__ import annotations

import pathlib
import threading
import time


def rss_mib(field: str = 'VmRSS') -> float:
  """A /proc/self/status memory field in MiB: 'VmRSS' (now) or 'VmHWM' (the
  peak since the process started, or since `reset_peak`)."""
  try:
    lines = pathlib.Path('/proc/self/status').read_text().splitlines()
  except OSError:
    return float('nan')
  for line in lines:
    if line.startswith(field + ':'):
      return int(line.split()[1]) / 1024
  return float('nan')


def reset_peak() -> bool:
  """Sets VmHWM back to the current RSS (writes 5 to /proc/self/clear_refs,
  Linux 4.0+), so that VmHWM read later is the peak of what ran in between.
  False where the kernel does not allow it: VmHWM then stays the peak since
  the process started."""
  try:
    pathlib.Path('/proc/self/clear_refs').write_text('5')
  except OSError:
    return False
  return True


class PeakRSS:
  """Samples VmRSS in a thread; `peak` is the largest seen while running."""

  def __init__(self, every: float = 0.02):
    self.every, self.peak, self._stop = every, rss_mib(), threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_mib())
      time.sleep(self.every)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_mib())
