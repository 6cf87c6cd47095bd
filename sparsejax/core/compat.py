"""Deprecated: the capability methods that every `Schedule` used to carry.

Until this release every schedule had IMP's rewinding hooks, STE's flag,
at-init binding and compile-cache keys, although one or two schedules use
each. They are now the capability mixins of `protocol` (`Rewinding`,
`StraightThrough`, `Bindable`, `SharesPrograms`), mixed in by the schedules
that have them, and callers ask through `protocol.is_rewinding(s)`,
`protocol.program_key(s)`, `protocol.bind(s, ...)` and so on.

`Schedule` still inherits these neutral defaults for one release, and they
warn: reading one (`schedule.rewinds`, `OneShot.straight_through`,
`schedule.needs_binding`) or calling one (`schedule.program_key()`,
`schedule.bind(...)` on a schedule that does not bind) emits a
`DeprecationWarning` naming the `protocol` function to use instead, and
still gives the neutral answer. A schedule's own capability (a mixin's
method, or a schedule's override) never warns, and neither do `protocol`'s
functions, which look past these defaults.

A user's subclass in the older style, which sets `rewinds = True` and
overrides `should_rewind` / `rewind_target` (or sets `straight_through =
True`, or overrides `program_key`, `bind`, ...) without mixing in the
capability, keeps working: `protocol`'s functions honour the overrides. Such
a class warns once, when it is defined, naming the mixin to add
(`class MySchedule(protocol.Rewinding, Schedule)`). All of this goes in the
next release.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax.numpy as jnp

from sparsejax.core import protocol

PyTree = Any

# name -> (the capability that has it, what to call instead)
DEPRECATED: dict[str, tuple[type, str]] = {
    'rewinds': (protocol.Rewinding, 'is_rewinding(schedule)'),
    'should_rewind': (protocol.Rewinding, 'should_rewind(schedule, step)'),
    'rewind_target': (protocol.Rewinding, 'is_rewinding(schedule) (only a rewinding schedule '
                      'has a rewind target)'),
    'lr_step': (protocol.Rewinding, 'lr_step(schedule, step)'),
    'restart_period': (protocol.Rewinding, 'restart_period(schedule)'),
    'straight_through': (protocol.StraightThrough, 'is_straight_through(schedule)'),
    'needs_binding': (protocol.Bindable, 'needs_binding(schedule)'),
    'bind': (protocol.Bindable, 'bind(schedule, **context)'),
    'program_key': (protocol.SharesPrograms, 'program_key(schedule)'),
    'init_data': (protocol.SharesPrograms, 'init_data(schedule)'),
    'with_init_data': (protocol.SharesPrograms, 'with_init_data(schedule, data)'),
}


def _warn(cls: type, name: str, stacklevel: int = 3) -> None:
  """The warning for reaching the deprecated default `name` of a `cls` that
  lacks the capability; `stacklevel` 3 points at the caller of the default."""
  capability, instead = DEPRECATED[name]
  warnings.warn(
      f'{cls.__name__}.{name} is the deprecated neutral default of a schedule without the '
      f'{capability.__name__} capability (sparsejax.core.compat, removed in the next '
      f'release); use sparsejax.core.protocol.{instead}', DeprecationWarning,
      stacklevel=stacklevel)


class _DeprecatedValue:
  """A flag or property default: reading it (on the class or an instance)
  warns and gives `value`."""

  def __init__(self, value):
    self.value = value

  def __set_name__(self, owner, name):
    self.name = name

  def __get__(self, obj, owner=None):
    _warn(owner if obj is None else type(obj), self.name)
    return self.value


class CapabilityDefaults:
  """Neutral answers of the capabilities for a schedule that lacks them;
  each warns (see the module's docstring)."""
  # protocol's functions skip the class holding this marker when they look a
  # capability up on a schedule's type (so they never reach a default here).
  _deprecated_capability_defaults = True

  rewinds = _DeprecatedValue(False)             # mix in protocol.Rewinding
  straight_through = _DeprecatedValue(False)    # mix in protocol.StraightThrough
  restart_period = _DeprecatedValue(None)
  needs_binding = _DeprecatedValue(False)

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    older = {}
    for name, (capability, _) in DEPRECATED.items():
      if name in vars(cls) and not issubclass(cls, capability):
        older.setdefault(capability.__name__, []).append(name)
    for capability, names in older.items():
      warnings.warn(
          f'{cls.__qualname__} defines {", ".join(names)} without the {capability} capability: '
          f'this older schedule protocol still works but is deprecated and goes in the next '
          f'release; mix in sparsejax.core.protocol.{capability} '
          f'(class {cls.__name__}(protocol.{capability}, Schedule))', DeprecationWarning,
          stacklevel=2)

  def should_rewind(self, step):
    _warn(type(self), 'should_rewind')
    del step
    return jnp.asarray(False)

  def rewind_target(self, masks, state):
    _warn(type(self), 'rewind_target')
    raise TypeError(f'{type(self).__name__} does not rewind (rewinds is False)')

  def lr_step(self, step):
    _warn(type(self), 'lr_step')
    return step

  def bind(self, **context):
    _warn(type(self), 'bind')
    del context
    return self

  def program_key(self):
    _warn(type(self), 'program_key')
    return None

  def init_data(self) -> PyTree:
    _warn(type(self), 'init_data')
    return None

  def with_init_data(self, data: PyTree):
    _warn(type(self), 'with_init_data')
    del data
    return self
