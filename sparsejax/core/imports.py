"""Names for things a config picks: a registered name, or an import path
`pkg.module:Name` for what no registry holds. `resolve(name, table, kind)` is
the one lookup behind every registry (schedules, criteria, patterns,
allocations, models, datasets, optax names); `import_object` follows an
import path.

Imports nothing from sparsejax, so every layer may use it (tests/test_layering.py
puts it below the core and optim).
"""

from __future__ import annotations

import difflib
import importlib
import types
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

IMPORT_PATH_HINT = "give an import path 'pkg.module:Name'"


class UnknownName(ValueError):
  """A name that is neither in the table nor an import path. `kind`, `name`,
  `near` (close matches from the table) and `choices` are kept so a caller can
  phrase its own error (`OptimizerError`, `DataError`)."""

  def __init__(self, message: str, *, kind: str, name: Any, near: list[str],
               choices: list[str]):
    super().__init__(message)
    self.kind, self.name, self.near, self.choices = kind, name, near, choices


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


def close_matches(name, choices, n: int = 3) -> list[str]:
  """The `choices` nearest to `name` (difflib), best first."""
  return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n)


def did_you_mean(near: list[str]) -> str:
  """' (did you mean 'a' or 'b'?)' for close matches `near`, or ''."""
  return f" (did you mean {' or '.join(map(repr, near))}?)" if near else ''


def resolve(name, table: Mapping, kind: str, *, note: str = ''):
  """`table[name]` for a registered name; else, for a string with ':', the
  object at that import path (`import_object`'s ValueError when it is not
  there); else one `UnknownName` (a ValueError) naming the kind, the value,
  the table's close matches and its names, plus `note` when given."""
  if isinstance(name, Hashable):
    try:
      return table[name]
    except (KeyError, TypeError):   # TypeError: a tuple holding a list
      pass
  if isinstance(name, str) and ':' in name:
    return import_object(name, kind)
  choices = sorted(map(str, table))
  near = close_matches(name, choices)
  raise UnknownName(f'unknown {kind} {name!r}{did_you_mean(near)}; choose from {choices} or '
                    f'{IMPORT_PATH_HINT}' + (f' ({note})' if note else ''),
                    kind=kind, name=name, near=near, choices=choices)


class Namespace(Mapping):
  """A module's attributes as a table for `resolve`: `ns[name]` is
  `getattr(module, name)` (KeyError when it has none); iterating gives the
  public names (what close matches are drawn from)."""

  def __init__(self, module: types.ModuleType):
    self.module = module

  def __getitem__(self, name: str):
    if not isinstance(name, str):
      raise KeyError(name)
    try:
      return getattr(self.module, name)
    except AttributeError:
      raise KeyError(name) from None

  def __iter__(self) -> Iterator[str]:
    return (n for n in dir(self.module) if not n.startswith('_'))

  def __len__(self) -> int:
    return sum(1 for _ in self)
