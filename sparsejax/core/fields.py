"""Helpers over dataclass settings shared by schedules and the training loop:
a hashable key for compiled-program reuse, a JSON-able description, and the
order check of start/end settings that may be steps or fractions of a run."""

from __future__ import annotations

import dataclasses


def fields_key(obj, skip=()) -> tuple:
  """A `program_key` from a dataclass's type and fields (but `skip`): hashable
  values as themselves, others by identity (a conservative key: the caller
  keeps the object alive while it uses the key)."""
  def ident(v):
    try:
      hash(v)
      return v
    except TypeError:
      return ('id', id(v))
  return (type(obj), *((f.name, ident(getattr(obj, f.name)))
                       for f in dataclasses.fields(obj) if f.name not in skip))


def same_units_ordered(start, end) -> bool:
  """start < end when both count steps (ints) or both are fractions of the run
  (floats); True when they mix, as the order is only known once `for_run`
  resolves the fractions (it checks again)."""
  if isinstance(start, float) != isinstance(end, float):
    return True
  return start < end


def describe(v):
  """A JSON-able description of a setting (dataclasses as dicts of their fields)."""
  if dataclasses.is_dataclass(v) and not isinstance(v, type):
    return {'type': type(v).__name__, **{f.name: describe(getattr(v, f.name))
                                         for f in dataclasses.fields(v)}}
  if isinstance(v, (tuple, list)):
    return [describe(x) for x in v]
  if isinstance(v, dict):
    return {str(k): describe(x) for k, x in v.items()}
  if v is None or isinstance(v, (bool, int, float, str)):
    return v
  if callable(v):
    return getattr(v, '__qualname__', None) or type(v).__name__
  return f'<{type(v).__name__}>'
