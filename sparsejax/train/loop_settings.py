"""How the training loop runs a task, apart from what it trains: `LoopSettings`.

A `Task` holds what is trained (data, model, loss, optimizer, schedule, batch
sizes, dtypes, mesh) and, in its field `loop`, these settings: how long to
train, the seed, and the cadence of logs, evaluations and checkpoints. The
split is by what the compiled programs read: the train, eval and density
programs never read a loop setting (the seed reaches the train step only
through the state's rng, `steps` only through the schedule resolved for the
run, whose own key says so), so runs that differ only here share their
compiled programs (`compiled.program_key` hashes every Task field but `loop`
and the schedule). A field added to `Task` is thus part of that key unless it
is put here, which it may be only if no compiled program reads it.

Until the next release `Task` also takes these settings as flat keywords
(`Task(..., steps=100)`, `task.replace(seed=1)`) with a `DeprecationWarning`;
`task.steps` etc. read them (also deprecated). The new forms are
`Task(..., loop=LoopSettings(steps=100))` and `task.with_loop(seed=1)`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

from sparsejax.train.errors import SetupError

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """The training loop's own settings: nothing here changes a compiled program."""
  steps: int = 1000                       # micro-steps (updates * accumulate)
  seed: int = 0                           # init, data order, dropout (via the state's rng)
  learning_rate: Callable | None = None   # step -> lr, only for the logs
  log_every: int = 10
  eval_every: int = 500
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  eval_splits: tuple[str, ...] = ('test',)
  eval_at_start: bool = False
  early_stopping: int = 0                 # evals without a lower validation loss; 0 = off
  prefetch: int = 2                       # host batches prepared ahead of the step
  writers: tuple = ()                     # metric writers: factories workdir -> writer, or
                                          # their import paths (train.metrics)

  def __post_init__(self):
    for name in ('steps', 'log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints'):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise SetupError(f'{name} must be a positive integer, got {v!r}')
    if not isinstance(self.writers, tuple) or not all(
        isinstance(w, str) or callable(w) for w in self.writers):
      raise SetupError(f'writers must be a tuple of factories workdir -> writer or their '
                       f"import paths 'pkg.module:fn', got {self.writers!r}")
    if self.early_stopping and 'validation' not in self.eval_splits:
      raise SetupError("early_stopping needs 'validation' in eval_splits")
    for split in self.eval_splits:
      if split not in SPLITS:
        raise SetupError(f"eval_splits: unknown split {split!r}; use 'train', 'validation' "
                         "or 'test'")

  def replace(self, **changes) -> 'LoopSettings':
    """A copy with `changes` (checked again)."""
    return dataclasses.replace(self, **changes)


LOOP_FIELDS = tuple(f.name for f in dataclasses.fields(LoopSettings))


def pop_flat(kwargs: dict, loop: LoopSettings | None, where: str) -> LoopSettings | None:
  """The deprecated flat keywords: removes the loop settings among `kwargs`
  and returns `loop` (or the defaults) with them, warning once per call site;
  `loop` unchanged when there are none. `where` names the call in the warning
  ('Task(...)' or 'task.replace(...)')."""
  flat = {k: kwargs.pop(k) for k in LOOP_FIELDS if k in kwargs}
  if not flat:
    return loop
  args = ', '.join(f'{k}=...' for k in flat)
  use = (f'Task(..., loop=LoopSettings({args})) (from sparsejax.train.task import '
         'LoopSettings)' if where == 'Task(...)' else f'task.with_loop({args})')
  warnings.warn(f'{where} with the loop settings {", ".join(flat)} as keywords is deprecated '
                f'and will be removed in the next release; use {use}',
                DeprecationWarning, stacklevel=3)
  return (loop or LoopSettings()).replace(**flat)


def delegating_property(name: str) -> property:
  """A read-only property `task.<name>` that reads `task.loop.<name>` (deprecated)."""
  def get(self):
    warnings.warn(f'task.{name} is deprecated and will be removed in the next release; '
                  f'read task.loop.{name}', DeprecationWarning, stacklevel=2)
    return getattr(self.loop, name)
  return property(get, doc=f'Deprecated: `loop.{name}` (see `LoopSettings`).')
