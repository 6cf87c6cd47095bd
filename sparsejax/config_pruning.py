"""The nested blocks of `pruning`: `allocation`, `pattern` and `rule`.

A config may set the schedule's allocation, its sparsity pattern and the
prunable-leaf rule either flat (`c.pruning.allocation = 'erk'`,
`c.pruning.scales = {...}`, `c.pruning.pattern = 'nm'`,
`c.pruning.pattern_options = {'n': 2, 'm': 4}`, `c.pruning.min_ndim = 1`)
or as one block each:

    c.pruning.allocation = {'name': 'erk', 'scales': {'output': 0.5}}
    c.pruning.pattern = {'name': 'nm', 'n': 2, 'm': 4}
    c.pruning.rule = {'exclude': '^embed/', 'min_ndim': 2}

A block's keys and their types come from the dataclass it builds
(`core.allocation.Allocation`, whose `method` is the block's `name`; the
named pattern class; `core.tree.PrunableRule`): a locked ml_collections
ConfigDict made from the fields checks the keys and types, and its errors
become one ConfigError naming the dotted key.

Why flat is the canonical form: run names hash the config (`settings_hash`)
and workdirs record it, both made before blocks existed. So a block is
turned into the flat keys it stands for, one key each (`flat_pruning`),
before anything hashes, records or reads the config: a block and the flat
keys that say the same thing are the same run. Setting a block and one of
its flat keys as well is an error. Command-line overrides reach into a block
(`--config.pruning.pattern.n=4`) through `block_override`, which checks the
key and value the same way and returns the flat overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

import ml_collections

from sparsejax.core import allocation as alloc_lib, patterns, tree
from sparsejax.core.imports import resolve
from sparsejax.settings import ConfigError

BLOCKS = ('allocation', 'pattern', 'rule')
RULE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(tree.PrunableRule)}
RULE_KEYS = tuple(RULE_DEFAULTS)
# The flat keys each block stands for, besides the block's own key.
FLAT_KEYS = {'allocation': alloc_lib.MODIFIERS, 'pattern': ('pattern_options',),
             'rule': RULE_KEYS}
_SIMPLE = (bool, int, float, str)


def plain(x):
  """A config (or part of one) as plain dicts and tuples."""
  if isinstance(x, ml_collections.ConfigDict):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): plain(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(plain(v) for v in x)
  return x


def _entry(cls, field: dataclasses.Field):
  """A ConfigDict entry for a dataclass field: its default, typed where the
  field's type is one plain type (or that type or None); None (any type,
  checked when the object is built) otherwise."""
  default = (field.default if field.default is not dataclasses.MISSING else
             field.default_factory() if field.default_factory is not dataclasses.MISSING
             else None)
  try:
    hint = typing.get_type_hints(cls).get(field.name, Any)
  except Exception:    # noqa: BLE001  (a user class's unresolvable annotations: no type)
    hint = type(default) if isinstance(default, _SIMPLE) else Any
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if len(args) == 1 and type(None) in typing.get_args(hint) else Any
  if hint in _SIMPLE and (default is None or isinstance(default, hint)):
    return ml_collections.FieldReference(default, field_type=hint)
  if isinstance(default, tuple) and typing.get_origin(hint) is tuple:
    return default
  return None


def _pattern_class(name):
  if not isinstance(name, str):
    raise ConfigError("config key 'pruning.pattern.name' must be a pattern name or "
                      f"'pkg.module:Class', got {name!r}")
  try:
    return resolve(name, patterns.PATTERNS, 'sparsity pattern')
  except ValueError as e:
    raise ConfigError(f"config key 'pruning.pattern.name': {e}") from None


def block_schema(block: str, given: Mapping) -> ml_collections.ConfigDict:
  """The locked ConfigDict of a block's keys with their defaults, from the
  dataclass it builds (the pattern's class from `given['name']`)."""
  if block == 'allocation':
    cls, entries = alloc_lib.Allocation, {'name': ml_collections.FieldReference(None, str)}
  elif block == 'pattern':
    if 'name' not in given:
      raise ConfigError(f"config key 'pruning.pattern.name' is required: the pattern by "
                        f"name ({', '.join(patterns.PATTERNS)}) or 'pkg.module:Class'")
    cls = _pattern_class(given['name'])
    entries = {'name': ml_collections.FieldReference(None, str)}
    if not dataclasses.is_dataclass(cls):   # no fields to check: the class checks its keywords
      entries.update({k: None for k in given if k != 'name'})
  else:
    cls, entries = tree.PrunableRule, {}
  if dataclasses.is_dataclass(cls):
    for f in dataclasses.fields(cls):
      if f.name != 'method' or cls is not alloc_lib.Allocation:
        entries[f.name] = _entry(cls, f)
  schema = ml_collections.ConfigDict(entries)
  schema.lock()
  return schema


def check_block(block: str, given: Mapping) -> dict:
  """The keys `given` sets, checked against the block's schema; ConfigError
  naming the first unknown key or wrong type."""
  where, given = f'pruning.{block}', plain(given)
  schema = block_schema(block, given)
  for key, value in given.items():
    if key not in schema:
      takes = sorted(schema.keys())
      close = difflib.get_close_matches(key, takes, n=1) or [k for k in takes if key in k]
      what = {'allocation': 'an allocation', 'rule': 'the prunable-leaf rule'}.get(
          block, f'pattern {given.get("name")!r}')
      raise ConfigError(f'config key {f"{where}.{key}"!r} is not a setting of {what}'
                        f'{f" (did you mean {close[0]!r}?)" if close else ""}; '
                        f'it takes {takes}')
    try:
      schema[key] = value
    except TypeError:
      ref = schema.get_ref(key)
      raise ConfigError(f'config key {f"{where}.{key}"!r} must be '
                        f'{ref.get_type().__name__}, got {type(value).__name__} '
                        f'{value!r}') from None
  return given


def _is_set(block: str, key: str, value) -> bool:
  """Whether a flat key is set: not None, and for the rule not its default."""
  if value is None:
    return False
  if block == 'rule':
    return value != RULE_DEFAULTS[key]
  return True


def _flat_of(block: str, given: Mapping) -> dict:
  """The flat keys a checked block stands for, one per key it sets."""
  given = dict(given)
  if block == 'rule':
    return given
  name = given.pop('name', None)
  out = {} if name is None else {block: name}
  if block == 'allocation':
    out.update(given)
  elif given:
    out['pattern_options'] = given
  return out


def flat_pruning(pruning) -> dict:
  """`pruning` as plain data with its blocks turned into flat keys (a flat
  `pruning` comes back as it is); ConfigError for a bad block or a block set
  beside one of its flat keys."""
  pruning = plain(pruning)
  if not any(isinstance(pruning.get(b), Mapping) or (b == 'rule' and b in pruning)
             for b in BLOCKS):
    return pruning
  out = {k: v for k, v in pruning.items()
         if not (k in BLOCKS and isinstance(v, Mapping)) and k != 'rule'}
  rule = pruning.get('rule')
  if rule is not None and not isinstance(rule, Mapping):
    raise ConfigError(f"config key 'pruning.rule' must be a group of settings "
                      f'({list(RULE_KEYS)}), got {rule!r}')
  for block in BLOCKS:
    if not isinstance(pruning.get(block), Mapping):
      continue
    given = check_block(block, pruning[block])
    for key in FLAT_KEYS[block]:
      if _is_set(block, key, pruning.get(key)):
        inner = 'options of the block' if key == 'pattern_options' else repr(
            f'pruning.{block}.{key}')
        raise ConfigError(f"config key 'pruning.{key}' is set beside the block "
                          f"'pruning.{block}': set it in the block ({inner}), not both")
    out.update(_flat_of(block, given))
  return out


def flattened(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` itself if its `pruning` has no block, else a copy whose
  `pruning` holds the flat keys instead."""
  pruning = config.get('pruning') if hasattr(config, 'get') else None
  if not isinstance(pruning, (ml_collections.ConfigDict, Mapping)):
    return config
  flat = flat_pruning(pruning)
  if flat == plain(pruning):
    return config
  out = ml_collections.ConfigDict(config.to_dict())
  with out.ignore_type():
    out.pruning = ml_collections.ConfigDict(flat)
  return out


def _view(block: str, pruning: Mapping) -> dict:
  """The block a flat `pruning` holds: the keys it sets, by block key."""
  if block == 'rule':
    return {k: pruning[k] for k in RULE_KEYS if k in pruning}
  out = {} if pruning.get(block) is None else {'name': pruning[block]}
  if block == 'allocation':
    out.update({k: pruning[k] for k in alloc_lib.MODIFIERS if pruning.get(k) is not None})
  else:
    out.update(plain(pruning.get('pattern_options') or {}))
  return out


def block_override(pruning, dotted: str, value) -> dict | None:
  """The flat overrides {dotted key: value} of a command-line override into
  a block ('pruning.pattern.n', or a whole block 'pruning.pattern={...}',
  whose keys are set one by one; a new pattern name drops the old pattern's
  options), checked as a block; None for any other key."""
  parts = dotted.split('.')
  if parts[0] != 'pruning' or len(parts) not in (2, 3) or parts[1] not in BLOCKS:
    return None
  block = parts[1]
  if len(parts) == 3:
    changes = {parts[2]: value}
  elif isinstance(value, (Mapping, ml_collections.ConfigDict)):
    changes = plain(value)
  elif block != 'rule':
    return None           # the flat form: 'pruning.allocation=erk'
  elif value is None:
    return {}             # no rule block: the flat keys stay
  else:
    raise ConfigError(f"config key 'pruning.rule' must be a group of settings "
                      f'({list(RULE_KEYS)}), got {value!r}')
  flat = plain(pruning)
  old = _view(block, flat)
  if block == 'pattern' and changes.get('name', old.get('name')) != old.get('name'):
    old = {}                # another pattern: the options of the old one do not carry over
  view = check_block(block, {**old, **changes})
  if block == 'pattern':
    out = {'pruning.pattern': view.pop('name')}
    if view or flat.get('pattern_options') is not None:
      out['pruning.pattern_options'] = view
    return out
  return {f'pruning.{block if k == "name" else k}': v for k, v in view.items()
          if k == 'name' or k in changes}
