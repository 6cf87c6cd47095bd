"""Configs: ml_collections files in, typed settings out, in this one place.

A config is a Python file with `get_config()` returning a ConfigDict (the
flax-examples / big_vision convention). It usually starts from
`default_config()` and changes a few fields. Command-line overrides such as
`--config.sparsity=0.95` or `--config.pruning.schedule=gradual` are applied
here; `to_settings` then turns the ConfigDict into the frozen dataclasses of
`sparsejax.settings` (re-exported here; single blocks are translated in
`sparsejax.config_blocks`) that the rest of the code takes as
arguments. An unknown or misspelled key is an error naming it, both in a
config file and on the command line. The free-form `options` dicts (model,
data, pattern) are checked by what consumes them.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import json
import pathlib
from typing import Any, Mapping

import ml_collections

from sparsejax import bundled, optim
from sparsejax.config_blocks import (DTYPES, bool_value, choice, distill_settings,  # noqa: F401
                                     finetune_settings, lottery_settings, optimizer_spec,
                                     positive)
from sparsejax.core import allocation as alloc_lib, registry
from sparsejax.settings import (CONTROLS, FINETUNE_METHODS, REWINDS, ROW_SCORES,  # noqa: F401
                                ConfigError, DataSettings, DistillSettings, FinetuneSettings,
                                LotterySettings, MeshSettings, ModelSettings, PruningSettings,
                                Settings, TrainSettings)

FREE_FORM = ('options', 'pattern_options', 'overrides', 'scales')   # keys checked downstream
# `pruning` keys that are not fields of the schedule: the prunable-leaf rule and
# modifiers of the schedule's allocation and pattern.
PRUNING_KEYS = ('schedule', 'include', 'exclude', 'min_ndim', *alloc_lib.MODIFIERS,
                'pattern_options')
# Schedule fields a config does not set: the run's own seed and sparsity, and
# objects only Python can give.
NOT_FROM_CONFIG = ('sparsity', 'seed', 'masks', 'score_fn', 'reference')


def default_config() -> ml_collections.ConfigDict:
  """Every key a config may set, with its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.sparsity = 0.0                 # target fraction of prunable weights set to zero
  c.data = ml_collections.ConfigDict(dict(
      name='mnist1d', options={}, batch_size=100, eval_batch_size=1000, prefetch=2,
      on_device='auto', crop_padding=0, flip=False, shuffle=True))
  # crop_padding > 0: random crops of images padded by that many pixels; flip:
  # random horizontal flips; both on the device, drawn from (seed, step).
  # shuffle=False: every epoch takes the train split in stored order.
  c.model = ml_collections.ConfigDict(dict(name='mnist1d_mlp', options={}))
  # The loss on the model's outputs: '' (softmax cross-entropy; options:
  # label_smoothing), an optax loss name or 'pkg.module:fn', any of them
  # fn(outputs, labels, **options) -> per-example losses.
  c.loss = ml_collections.ConfigDict(dict(name='', options={}))
  # Any optax optimizer by name (or 'pkg.module:fn') with its keyword options,
  # gradient transforms chained before it, a learning-rate schedule, and
  # gradient accumulation over `accumulate` micro-batches (sparsejax.optim).
  c.optimizer = ml_collections.ConfigDict(dict(optim.OPTIMIZER_DEFAULTS))
  # The schedule by registry name or 'pkg.module:Class'; any other key here is
  # a field of that schedule's dataclass, and what is not set keeps the class's
  # default. Step fields (start, end, at_step) take fractions of the run as floats.
  # pruning.allocation: 'uniform', 'global', 'er', 'erk' or 'pkg.module:Class'
  # (sparsejax.core.allocation), with pruning.overrides/scales/erk_power_scale.
  c.pruning = ml_collections.ConfigDict(dict(
      schedule='dense', include=None, exclude=None, min_ndim=2))
  c.train = ml_collections.ConfigDict(dict(
      steps=1000, epochs=0, log_every=10, eval_every=500, checkpoint_every=500,
      keep_checkpoints=3, eval_splits=('test',), eval_at_start=False, early_stopping=0,
      optimizer_state=None, compute_dtype=None, param_dtype=None, pack_masks=None, writers=()))
  # train.optimizer_state: None or 'dense' (the inner optimizer's state is
  # params-shaped), or 'compact' (state for the kept weights only, with their
  # indices: sparsejax.core.compact; fixed-mask runs only, e.g. fine-tuning
  # and lottery levels). None by default, so older workdirs still resume.
  # train.pack_masks: True stores the masks as bits (1/8 byte per weight).
  # train.compute_dtype / train.param_dtype: None (float32), 'bfloat16' or
  # 'float16': mixed precision as a policy around the model (sparsejax.train.task).
  # epochs > 0 sets the run's length in passes over the train split instead of
  # steps (steps per epoch = examples // batch_size: full batches only).
  # mesh.fsdp: True also splits every param, its masks and moments over 'data'
  # (None: off, so older workdirs still resume).
  c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1), rules=(), fsdp=None))
  # The `lottery` program (IMP as levels): per level prune `prune_fraction` of
  # what remains (rates per layer from pruning.allocation/scales/overrides),
  # or reach the per-level targets in `sparsities` (one per level).
  c.lottery = ml_collections.ConfigDict(dict(
      levels=10, prune_fraction=0.2, sparsities=(), rewind='init', rewind_step=0,
      controls=(), control_levels=(), replicates=1))
  # The `finetune` program: start from trained weights, then either prune and
  # recover ('masked', with pruning.* as for training) or train a small part
  # of the model (parameter-efficient methods over the `targets` matrices).
  c.finetune = ml_collections.ConfigDict(dict(
      init_from='', method='masked', targets='', head='', rows=8, rank=4, alpha=0.0,
      budget='per_layer', row_score='l2', score_batches=4, select='delta',
      dense_steps=100, trainable=0))
  # Teacher-guided retraining (sparsejax.train.distill): the loss adds
  # kd_weight * T^2 KL(teacher || student at temperature T) (Hinton et al.
  # 2015) and hidden_weight * MSE of the outputs of the modules matching
  # hidden_modules. teacher: None or '' (off), 'start' (the dense weights the
  # fine-tuning starts from, before it prunes them; for a `sparsejax prune`
  # workdir, the weights it was pruned from) or a run / checkpoint / .npz /
  # .safetensors of the same model. None keeps the Distill class's default
  # (temperature 2.0, kd_weight 1.0, task_weight 1.0, hidden_weight 0.0,
  # hidden_modules the Transformer blocks '^(block|layer)_\d+$'). All None by
  # default, so workdirs recorded before this block existed still resume.
  c.distill = ml_collections.ConfigDict(dict(
      teacher=None, temperature=None, kd_weight=None, task_weight=None, hidden_weight=None,
      hidden_modules=None))
  return c


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
  check_keys(config)
  return config


def _line_in(error: BaseException, path: pathlib.Path) -> str:
  """' (line N)' of the innermost traceback frame in `path`, else ''."""
  import traceback
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if pathlib.Path(f.filename).resolve() == path.resolve()]
  return f' (line {frames[-1].lineno})' if frames else ''


def check_pruning_keys(pruning) -> None:
  """Keys of `pruning` other than the rule and modifiers must be fields of the schedule."""
  name = pruning.get('schedule', 'dense')
  try:
    fields = registry.schedule_fields(name)
  except ValueError as e:
    raise ConfigError(f"config key 'pruning.schedule': {e}") from None
  takes = sorted(set(fields) - set(NOT_FROM_CONFIG))
  for key in pruning:
    if key in PRUNING_KEYS or pruning[key] is None:    # None: not set (keeps the default)
      continue
    if key in NOT_FROM_CONFIG:
      hint = ("set the top-level key 'sparsity'" if key == 'sparsity' else
              "set the top-level key 'seed'" if key == 'seed' else 'pass it from Python')
      raise ConfigError(f"config key 'pruning.{key}' is not set here: {hint}")
    if key not in fields:
      raise ConfigError(f"config key 'pruning.{key}' is not a setting of schedule {name!r}"
                        f'{_suggest(key, takes) if difflib.get_close_matches(key, takes, n=1) else ""}'
                        f'; it takes {takes}')


def check_keys(config, schema=None, prefix='') -> None:
  """Every key of `config` must exist in the default schema (options dicts excepted;
  `pruning` keys are checked against the chosen schedule's fields)."""
  schema = default_config() if schema is None else schema
  if prefix == 'pruning.':
    check_pruning_keys(config)
    return
  for key, value in config.items():
    where = f'{prefix}{key}'
    if key not in schema:
      raise ConfigError(f'unknown config key {where!r}{_suggest(key, schema.keys())}')
    if key in FREE_FORM:
      continue
    if isinstance(schema[key], ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f'config key {where!r} must be a group of settings, got {value!r}')
      check_keys(value, schema[key], where + '.')


def _suggest(key, choices) -> str:
  close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
  return f' (did you mean {close[0]!r}?)' if close else f'; known keys: {sorted(choices)}'


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
  """Returns a copy with dotted keys ('pruning.schedule') set; values may be strings."""
  config = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in overrides.items():
    if isinstance(value, str):
      value = parse_value(value)
    *parents, leaf = dotted.split('.')
    node, where = config, ''
    for name in parents:
      where += name
      if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
        raise ConfigError(f'unknown config key {dotted!r}: {where!r} is not a group of settings'
                          f'{_suggest(name, node.keys()) if name not in node else ""}')
      node, where = node[name], where + '.'
    free = parents and (parents[-1] in FREE_FORM or parents == ['pruning'])
    if leaf not in node and not free:
      raise ConfigError(f'unknown config key {dotted!r}{_suggest(leaf, node.keys())}')
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
      raise ConfigError(f'bad value for config key {dotted!r}: {e}') from None
  check_keys(config)
  return config


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


# --- translation ------------------------------------------------------------------------------

def plain(x):
  """The config as plain dicts and tuples."""
  return _plain(x)


def _plain(x):
  if isinstance(x, ml_collections.ConfigDict):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_plain(v) for v in x)
  return x


def _writers(value) -> tuple[str, ...]:
  """train.writers: import paths 'pkg.module:fn' of metric-writer factories."""
  items = (value,) if isinstance(value, str) else tuple(value or ())
  for w in items:
    if not isinstance(w, str) or ':' not in w:
      raise ConfigError(f"config key 'train.writers': {w!r} is not an import path "
                        "'pkg.module:fn' of a factory workdir -> metric writer")
  return items


def show(config: ml_collections.ConfigDict) -> list[str]:
  """Every key of the config with its value, and its default where the
  config changes it: the config keys, plus what the named pieces take with
  their own defaults (the data loader's options, a registry model's
  settings, the schedule's fields under `pruning`); what `sparsejax config
  --show FILE` prints."""
  def flat(tree, prefix=''):
    for k, v in tree.items():
      if isinstance(v, Mapping) and (v or k not in FREE_FORM):
        yield from flat(v, f'{prefix}{k}.')
      else:
        yield f'{prefix}{k}', v
  merged = _merge(default_config().to_dict(), _plain(config))
  defaults = dict(flat(_plain(default_config())))
  defaults.update(_piece_defaults(merged))
  values = {**{k: v for k, v in defaults.items() if k not in ('data.options', 'model.options')},
            **dict(flat(merged))}
  width = max(map(len, values))
  lines = []
  for key in sorted(values, key=lambda k: (k.split('.')[:-1], k)):
    value, default = values[key], defaults.get(key, _NO_DEFAULT)
    line = f'{key:<{width}} = {"(required)" if value is _NO_DEFAULT else repr(value)}'
    if default is _NO_DEFAULT and value is not _NO_DEFAULT:
      line += '   (no default)'
    elif default != value and value is not _NO_DEFAULT:
      line += f'   (default {default!r})'
    lines.append(line)
  return lines


_NO_DEFAULT = type('NoDefault', (), {'__repr__': lambda self: '(required)'})()


def _piece_defaults(merged: dict) -> dict:
  """{'data.options.K': default} of the named loader, model and schedule
  (import paths: nothing; their signatures are the user's)."""
  import dataclasses
  import inspect
  from sparsejax import data, models
  out = {}
  name = merged['data']['name']
  if name in data.LOADERS:
    for k, v in data.loader_options(name).items():
      out[f'data.options.{k}'] = _NO_DEFAULT if v is inspect.Parameter.empty else v
  name = merged['model']['name']
  if name in models.MODELS and 'pretrained' not in merged['model']['options']:
    # (with `pretrained`, the checkpoint's metadata gives the architecture)
    for f in dataclasses.fields(models.MODELS[name]):
      if f.name not in ('parent', 'name'):
        out[f'model.options.{f.name}'] = (f.default if f.default is not dataclasses.MISSING
                                          else _NO_DEFAULT)
  try:
    fields = registry.schedule_fields(merged['pruning']['schedule'])
  except Exception:   # an unknown schedule: to_settings says so
    fields = {}
  for k, v in fields.items():
    if k not in NOT_FROM_CONFIG:
      out[f'pruning.{k}'] = _NO_DEFAULT if v is dataclasses.MISSING else v
  return out


def to_settings(config: ml_collections.ConfigDict) -> Settings:
  """The typed settings of a config; raises ConfigError naming a bad key."""
  merged = _merge(default_config().to_dict(), _plain(config))
  check_keys(ml_collections.ConfigDict(merged))
  d, m, o, p, t, mesh = (merged[k] for k in ('data', 'model', 'optimizer', 'pruning', 'train',
                                             'mesh'))
  sparsity = merged['sparsity']
  try:
    sparsity = alloc_lib.check_sparsity(sparsity, "config key 'sparsity'")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  shape = tuple(mesh['shape'])
  if len(shape) != 2 or any(not isinstance(s, int) or (s < 1 and s != -1) for s in shape):
    raise ConfigError(f"config key 'mesh.shape' must be (data, model) sizes, -1 for the rest, "
                      f'got {mesh["shape"]!r}')
  rules = []
  for i, rule in enumerate(mesh['rules']):
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ConfigError(f"config key 'mesh.rules[{i}]' must be (regex, partition spec), got {rule!r}")
    rules.append((rule[0], tuple(rule[1])))
  return Settings(
      seed=int(merged['seed']),
      data=DataSettings(name=d['name'], options=dict(d['options']),
                        batch_size=positive('data.batch_size', d['batch_size']),
                        eval_batch_size=positive('data.eval_batch_size', d['eval_batch_size']),
                        prefetch=positive('data.prefetch', d['prefetch'], allow_zero=True),
                        on_device=choice('data.on_device', d['on_device'],
                                          ('auto', 'yes', 'no')),
                        crop_padding=positive('data.crop_padding', d['crop_padding'],
                                               allow_zero=True),
                        flip=bool(d['flip']), shuffle=bool_value('data.shuffle', d['shuffle'])),
      model=ModelSettings(name=m['name'], options=dict(m['options'])),
      loss=(str(merged['loss']['name'] or ''), dict(merged['loss']['options'])),
      optimizer=optimizer_spec(o),
      pruning=PruningSettings(
          schedule=p['schedule'], sparsity=sparsity, include=p['include'],
          exclude=p['exclude'], min_ndim=int(p['min_ndim']),
          options={k: v for k, v in p.items()
                   if k not in ('schedule', 'include', 'exclude', 'min_ndim') and v is not None}),
      train=TrainSettings(
          steps=positive('train.steps', t['steps']),
          epochs=positive('train.epochs', t['epochs'], allow_zero=True),
          log_every=positive('train.log_every', t['log_every']),
          eval_every=positive('train.eval_every', t['eval_every']),
          checkpoint_every=positive('train.checkpoint_every', t['checkpoint_every']),
          keep_checkpoints=positive('train.keep_checkpoints', t['keep_checkpoints']),
          eval_splits=tuple(t['eval_splits']), eval_at_start=bool(t['eval_at_start']),
          early_stopping=positive('train.early_stopping', t['early_stopping'],
                                   allow_zero=True),
          optimizer_state=choice('train.optimizer_state', t['optimizer_state'] or 'dense',
                                  ('dense', 'compact')),
          compute_dtype=choice('train.compute_dtype', t['compute_dtype'] or 'float32', DTYPES),
          param_dtype=choice('train.param_dtype', t['param_dtype'] or 'float32', DTYPES),
          pack_masks=bool_value('train.pack_masks', t['pack_masks'] or False),
          writers=_writers(t['writers'])),
      mesh=MeshSettings(shape=shape, rules=tuple(rules),
                        fsdp=bool_value('mesh.fsdp', mesh['fsdp'] or False)),
      lottery=lottery_settings(merged['lottery']),
      finetune=finetune_settings(merged['finetune']),
      distill=distill_settings(merged['distill']),
  )


def _merge(base: dict, over: Mapping) -> dict:
  out = dict(base)
  for k, v in over.items():
    if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k not in FREE_FORM:
      out[k] = _merge(out[k], v)
    else:
      out[k] = v
  return out


def settings_hash(config: ml_collections.ConfigDict, length: int = 10) -> str:
  """Short hash of the settings that differ from the defaults (OpenLTH's run naming):
  adding a new key with a default does not change old runs' names."""
  diff = changed_keys(_merge(default_config().to_dict(), _plain(config)),
                      _plain(default_config()))
  text = json.dumps(diff, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def changed_keys(config: Mapping, defaults: Mapping, prefix='') -> dict:
  out = {}
  for k, v in config.items():
    if isinstance(v, Mapping) and isinstance(defaults.get(k), Mapping) and k not in FREE_FORM:
      out.update(changed_keys(v, defaults[k], f'{prefix}{k}.'))
    elif k not in defaults or defaults[k] != v:
      out[f'{prefix}{k}'] = v
  return out


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(_plain(config), indent=2, sort_keys=True, default=str)
