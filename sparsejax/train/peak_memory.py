"""Measured peak memory of one phase of this process (not counted from
shapes): the host's resident set and the accelerator allocator's peak.

Host: Linux's VmHWM (the peak resident set size) is set back to the current
RSS by writing 5 to /proc/self/clear_refs (Linux 4.0+), so VmHWM read after a
phase is that phase's peak. Before each reset, memory that earlier work freed
but the C allocator kept is handed back (`malloc_trim`, glibc), so it is not
charged to the phase. A phase may reset once more when it reaches its steady
state (`settled`, polled in a thread: e.g. the first logged training step,
after the step has been compiled), which leaves compiling out. Where the
reset is refused, the reading is the peak since the process started, and
`reset` says so.

Accelerator: `memory_stats()['peak_bytes_in_use']` of each local device
(XLA's allocator; CPU devices report none), the largest over devices; it
cannot be reset, so it is the peak since the process started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import pathlib
import threading
from typing import Callable

import jax


def release_freed() -> None:
  """Collects garbage and returns the C heap's free pages to the system
  (glibc's malloc_trim; a no-op elsewhere)."""
  gc.collect()
  try:
    ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass


def reset_host_peak() -> bool:
  """Sets VmHWM to the current RSS; False where the kernel does not allow it."""
  try:
    pathlib.Path('/proc/self/clear_refs').write_text('5')
  except OSError:
    return False
  return True


def host_peak_mib() -> float | None:
  """VmHWM of this process in MiB (None off Linux)."""
  try:
    status = pathlib.Path('/proc/self/status').read_text()
  except OSError:
    return None
  for line in status.splitlines():
    if line.startswith('VmHWM:'):
      return int(line.split()[1]) / 1024
  return None


def device_peak_bytes() -> int | None:
  """The largest `peak_bytes_in_use` over local devices; None where no device
  reports memory statistics (CPU)."""
  peaks = []
  for d in jax.local_devices():
    stats = d.memory_stats() if hasattr(d, 'memory_stats') else None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(int(stats['peak_bytes_in_use']))
  return max(peaks) if peaks else None


class Phase:
  """`with Phase(settled) as p: ...`; then `p.host_mib` is the host's peak
  RSS over the block, from the moment `settled()` first returned True
  (`p.settled`) or else from the block's start; `p.reset` is False where the
  peak could not be reset (then it is the peak since the process started)."""

  def __init__(self, settled: Callable[[], bool] | None = None, every: float = 0.2):
    self._settled, self._every = settled, every
    self._stop = threading.Event()
    self._thread = None
    self.reset, self.settled, self.host_mib = False, False, None

  def __enter__(self) -> 'Phase':
    release_freed()
    self.reset = reset_host_peak()
    if self.reset and self._settled is not None:
      self._thread = threading.Thread(target=self._watch, daemon=True)
      self._thread.start()
    return self

  def _watch(self) -> None:
    while not self._stop.wait(self._every):
      try:
        done = self._settled()
      except OSError:
        done = False
      if done:
        release_freed()
        self.settled = reset_host_peak()
        return

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    self.host_mib = host_peak_mib()


def after_rows(path, kind: str = 'train') -> Callable[[], bool]:
  """A `settled` test: True once the JSONL file `path` holds more rows of
  `kind` than it did when this was called (a resumed run's earlier rows do
  not count)."""
  path = pathlib.Path(path)
  count = lambda: (path.read_text().count(f'"kind": "{kind}"') if path.exists() else 0)
  before = count()
  return lambda: count() > before
