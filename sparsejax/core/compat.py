"""Deprecated: the capability methods that every `Schedule` used to carry.

Until this release every schedule had IMP's rewinding hooks, STE's flag,
at-init binding and compile-cache keys, although one or two schedules use
each. They are now the capability mixins of `protocol` (`Rewinding`,
`StraightThrough`, `Bindable`, `SharesPrograms`), mixed in by the schedules
that have them, and callers ask through `protocol.is_rewinding(s)`,
`protocol.program_key(s)`, `protocol.bind(s, ...)` and so on.

`Schedule` still inherits these neutral defaults for one release, so code
that reads `schedule.rewinds` or calls `schedule.program_key()` on any
schedule, and users' subclasses that set `rewinds = True` and override
`should_rewind` / `rewind_target` (or set `straight_through = True`), keep
working unchanged. They will be removed in the next release.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp

PyTree = Any


class CapabilityDefaults:
  """Neutral answers of the capabilities for a schedule that lacks them."""
  # Deprecated flags: mix in protocol.Rewinding / protocol.StraightThrough.
  rewinds: ClassVar[bool] = False
  straight_through: ClassVar[bool] = False

  def should_rewind(self, step):
    del step
    return jnp.asarray(False)

  def rewind_target(self, masks, state):
    raise TypeError(f'{type(self).__name__} does not rewind (rewinds is False)')

  def lr_step(self, step):
    return step

  @property
  def restart_period(self) -> int | None:
    return None

  @property
  def needs_binding(self) -> bool:
    return False

  def bind(self, **context):
    del context
    return self

  def program_key(self):
    return None

  def init_data(self) -> PyTree:
    return None

  def with_init_data(self, data: PyTree):
    del data
    return self
