"""Objects named by import path, `pkg.module:Name`: how a config names a
schedule, criterion or pattern (or a model, loss or data source) that is not
in a registry."""

from __future__ import annotations

import importlib


def import_object(path: str, what: str = 'object'):
  """The object at `pkg.module:Name` (ValueError naming the path if it is not there)."""
  module_name, sep, attr = path.partition(':')
  if not sep or not module_name or not attr:
    raise ValueError(f'{what} {path!r} is neither a known name nor an import path '
                     "'pkg.module:Name'")
  try:
    obj = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f'{what} {path!r}: cannot import {module_name!r} ({e})') from None
  for part in attr.split('.'):
    if not hasattr(obj, part):
      raise ValueError(f'{what} {path!r}: {module_name!r} has no {attr!r}')
    obj = getattr(obj, part)
  return obj
