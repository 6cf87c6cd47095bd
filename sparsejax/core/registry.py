"""Schedule names for configs: one key swaps one schedule for another.

A plain dict literal, built once; nothing registers itself at import time.
A schedule outside this dict is named by its import path, `pkg.module:Class`.
"""

from __future__ import annotations

import dataclasses

from sparsejax.core import at_init, dynamic, imp, movement, schedules, ste
from sparsejax.core.imports import resolve

SCHEDULES = {
    'dense': schedules.Dense,
    'oneshot': schedules.OneShot,
    'gradual': schedules.Gradual,
    'fixed': schedules.FixedMask,
    'at_init': at_init.AtInit,
    'set': dynamic.SET,
    'rigl': dynamic.RigL,
    'imp': imp.IMP,
    'movement': movement.Movement,
    'ste': ste.STE,
}


def schedule_class(name: str) -> type[schedules.Schedule]:
  """The schedule class for a registry name or an import path."""
  cls = resolve(name, SCHEDULES, 'schedule')
  if name not in SCHEDULES and not (isinstance(cls, type) and issubclass(cls, schedules.Schedule)
          and dataclasses.is_dataclass(cls)):
    raise ValueError(f'schedule {name!r} is not a dataclass subclass of '
                     'sparsejax.core.schedules.Schedule')
  return cls


def schedule_fields(name: str) -> dict[str, object]:
  """{setting: default} of a schedule: its dataclass fields (the class's defaults)."""
  cls = schedule_class(name)
  out = {}
  for f in dataclasses.fields(cls):
    if f.default is not dataclasses.MISSING:
      out[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:
      out[f.name] = f.default_factory()
    else:
      out[f.name] = dataclasses.MISSING
  return out


def make_schedule(name: str, **kwargs) -> schedules.Schedule:
  """A schedule by name (or import path) with keyword settings; what is not
  given keeps the class's default. Unknown names or keys raise ValueError."""
  cls = schedule_class(name)
  fields = schedule_fields(name)
  for key in kwargs:
    if key not in fields:
      raise ValueError(f'schedule {name!r} has no setting {key!r}; '
                       f'its settings are {sorted(fields)}')
  return cls(**kwargs)
