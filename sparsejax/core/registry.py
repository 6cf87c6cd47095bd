"""Schedule names for configs: one key swaps one schedule for another.

A plain dict literal, built once; nothing registers itself at import time.
"""

from __future__ import annotations

import dataclasses

from sparsejax.core import dynamic, imp, schedules

SCHEDULES = {
    'dense': schedules.Dense,
    'oneshot': schedules.OneShot,
    'gradual': schedules.Gradual,
    'fixed': schedules.FixedMask,
    'at_init': schedules.AtInit,
    'set': dynamic.SET,
    'rigl': dynamic.RigL,
    'imp': imp.IMP,
}


def make_schedule(name: str, **kwargs) -> schedules.Schedule:
  """A schedule by name with keyword settings; unknown names or keys raise ValueError."""
  if name not in SCHEDULES:
    raise ValueError(f'unknown schedule {name!r}; choose from {sorted(SCHEDULES)}')
  cls = SCHEDULES[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  for key in kwargs:
    if key not in fields:
      raise ValueError(f'schedule {name!r} has no setting {key!r}; '
                       f'its settings are {sorted(fields)}')
  return cls(**kwargs)
