"""Configs: ml_collections files in, typed settings out, in this one place.

A config is a Python file with `get_config()` returning a ConfigDict (the
flax-examples / big_vision convention). It usually starts from
`default_config()` and changes a few fields. Command-line overrides such as
`--config.sparsity=0.95` or `--config.pruning.schedule=gradual` are applied
here; `to_settings` then turns the ConfigDict into the frozen dataclasses of
`sparsejax.settings` that the rest of the code takes as arguments. An
unknown or misspelled key is an error naming it, both in a config file and
on the command line. The free-form `options` dicts (model, data, pattern)
are checked by what consumes them. `pruning.allocation`, `pruning.pattern`
and `pruning.rule` may be nested blocks (`config_pruning`), turned into the
flat keys they stand for as a config is loaded or overridden.

This module loads and overrides configs; it re-exports the rest, which lives
in `config_schema` (every key with its default, the key checks, a config
against its defaults: `settings_hash`, `record`, `show`) and `config_blocks`
(`to_settings` and the value checks).
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import traceback
from typing import Any, Mapping

import ml_collections

from sparsejax import bundled
from sparsejax.config_blocks import (CONTROLS, DTYPES, FINETUNE_METHODS, REWINDS,  # noqa: F401
                                     ROW_SCORES, FinetuneSettings, bool_value, choice,
                                     distill_settings, finetune_settings, lottery_settings,
                                     optimizer_spec, positive, to_settings)
from sparsejax.config_pruning import BLOCKS, block_override, flat_pruning, flattened  # noqa: F401
from sparsejax.config_schema import (FREE_FORM, NOT_FROM_CONFIG, PRUNING_KEYS,  # noqa: F401
                                     changed, changed_keys, check_keys, check_pruning_keys,
                                     default_config, record, settings_hash, show, suggest,
                                     to_json, with_defaults)
from sparsejax.core import registry
from sparsejax.settings import (ConfigError, DataSettings, DistillSettings,  # noqa: F401
                                LotterySettings, MeshSettings, ModelSettings, PruningSettings,
                                Settings, TrainSettings)


# --- loading and overriding --------------------------------------------------------------

def config_file(text: str | pathlib.Path) -> tuple[pathlib.Path, str | None]:
  """(file, argument) that a --config names: a path, `file.py:arg`, or a
  shipped config by name or by its repository path (`configs/...`,
  `experiments/...`), found in an installed wheel too (sparsejax.bundled)."""
  text, arg = str(text), None
  found = bundled.find(text)
  if found is None and ':' in text:
    text, arg = text.rsplit(':', 1)
    found = bundled.find(text)
  if found is None:
    names = ', '.join(bundled.config_names())
    raise ConfigError(f'config file {text!r} does not exist (shipped configs by name: {names})')
  return found, arg


def load_config(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """Runs `get_config()` from a Python config file; `file.py:arg` calls
  `get_config(arg)` (the ml_collections config_flags convention)."""
  path, arg = config_file(path)
  spec = importlib.util.spec_from_file_location(f'_sparsejax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f'config file {str(path)!r} line {e.lineno}: {e.msg}') from None
  except Exception as e:    # noqa: BLE001  (whatever the file raises, named in one line)
    raise ConfigError(f'config file {str(path)!r} failed to load: '
                      f'{type(e).__name__}: {e}{_line_in(e, path)}') from None
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {str(path)!r} has no get_config() function')
  try:
    config = module.get_config() if arg is None else module.get_config(arg)
  except ConfigError:
    raise
  except Exception as e:    # noqa: BLE001  (whatever get_config raises, named in one line)
    if isinstance(e, TypeError) and arg is not None and 'positional argument' in str(e):
      raise ConfigError(f'config file {str(path)!r}: get_config() takes no argument, '
                        f'but {arg!r} was given after the colon') from None
    hint = ("; a group of settings is set key by key, e.g. c.loss.name = 'pkg.mod:fn' and "
            'c.loss.options = {...}' if 'ConfigDict' in str(e) else '')
    raise ConfigError(f'config file {str(path)!r}: get_config() raised {type(e).__name__}: '
                      f'{e}{_line_in(e, path)}{hint}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(config)
  config = flattened(config)    # pruning blocks as the flat keys they stand for
  check_keys(config)
  return config


def _line_in(error: BaseException, path: pathlib.Path) -> str:
  """' (line N)' of the innermost traceback frame in `path`, else ''."""
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if pathlib.Path(f.filename).resolve() == path.resolve()]
  return f' (line {frames[-1].lineno})' if frames else ''


def parse_value(text: str):
  """A command-line value: a Python literal if it parses as one, else the string."""
  lowered = text.strip().lower()
  if lowered in ('true', 'false'):
    return lowered == 'true'
  if lowered in ('none', 'null'):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
  """Returns a copy with dotted keys ('pruning.schedule') set; values may be
  strings. A key inside a `pruning` block ('pruning.pattern.n') sets the flat
  key it stands for (sparsejax.config_pruning)."""
  config = ml_collections.ConfigDict(flattened(config).to_dict())
  for dotted, value in overrides.items():
    if isinstance(value, str):
      value = parse_value(value)
    flat = block_override(config.get('pruning', {}), dotted, value)
    for key, v in ({dotted: value} if flat is None else flat).items():
      _set(config, dotted, key, v)
  check_keys(config)
  return config


def _set(config: ml_collections.ConfigDict, given: str, dotted: str, value) -> None:
  """Sets one dotted key of `config`; errors name `given`, the key as overridden."""
  *parents, leaf = dotted.split('.')
  node, where = config, ''
  for name in parents:
    where += name
    if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
      raise ConfigError(f'unknown config key {given!r}: {where!r} is not a group of settings'
                        f'{suggest(name, node.keys()) if name not in node else ""}')
    node, where = node[name], where + '.'
  free = parents and (parents[-1] in FREE_FORM or parents == ['pruning'])
  if leaf not in node and not free:
    raise ConfigError(f'unknown config key {given!r}{suggest(leaf, node.keys())}')
  old = node[leaf] if leaf in node else None
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if parents == ['pruning'] and _takes_fraction(node, leaf, value):
    old = None            # a step count or a fraction of the run: either type is right
  if isinstance(old, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(value, dict):
    value = ml_collections.ConfigDict(value)
  try:
    with node.ignore_type():
      if old is not None and value is not None and type(old) is not type(value) and not (
          isinstance(old, (dict, ml_collections.ConfigDict)) and isinstance(
              value, (dict, ml_collections.ConfigDict))):
        raise TypeError(f'expected {type(old).__name__}, got {type(value).__name__} {value!r}')
      node[leaf] = value
  except TypeError as e:
    raise ConfigError(f'bad value for config key {given!r}: {e}') from None


def _takes_fraction(pruning, key: str, value) -> bool:
  """Whether `pruning.key` is one of its schedule's step fields (`start`,
  `end`, `at_step`: a step count or a fraction of the run) and `value` a number."""
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    return False
  try:
    cls = registry.schedule_class(pruning.get('schedule', 'dense'))
  except ValueError:
    return False
  return key in getattr(cls, 'step_fields', ())


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separates '--config.a.b=v' (or '--config.a.b v') from the other arguments."""
  rest, overrides, i = [], {}, 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config.'):
      body = arg[len('--config.'):]
      if '=' in body:
        key, value = body.split('=', 1)
      elif i + 1 < len(argv):
        key, value = body, argv[i + 1]
        i += 1
      else:
        raise ConfigError(f'override {arg!r} has no value')
      overrides[key] = value
    else:
      rest.append(arg)
    i += 1
  return rest, overrides
