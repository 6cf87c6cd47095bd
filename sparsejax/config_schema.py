"""What a config may say: every key with its default (`default_config`), the
check of a config's keys against them, and a config measured against its
defaults: filled in (`with_defaults`), the keys it changes (`changed`, whose
hash names a run: `settings_hash`), what a workdir records of it (`record`)
and the `sparsejax config --show` listing (`show`). `sparsejax.config`
re-exports all of it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
from typing import Mapping

import ml_collections

from sparsejax import config_pruning, optim
from sparsejax.core import allocation as alloc_lib, registry
from sparsejax.settings import ConfigError

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
  # (sparsejax.core.allocation), with pruning.overrides/scales/erk_power_scale;
  # pruning.pattern with pruning.pattern_options. Or one block each, keys from
  # the dataclasses (sparsejax.config_pruning):
  #   c.pruning.allocation = {'name': 'erk', 'erk_power_scale': 1.0,
  #                           'overrides': (), 'scales': {'output': 0.5}}
  #   c.pruning.pattern = {'name': 'nm', 'n': 2, 'm': 4}
  #   c.pruning.rule = {'include': None, 'exclude': '^embed/', 'min_ndim': 2}
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


# --- checking keys -------------------------------------------------------------------------

def check_pruning_keys(pruning) -> None:
  """Keys of `pruning` other than the rule and modifiers must be fields of the schedule."""
  pruning = config_pruning.flat_pruning(pruning)    # blocks: as the flat keys they stand for
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
                        f'{suggest(key, takes) if difflib.get_close_matches(key, takes, n=1) else ""}'
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
      raise ConfigError(f'unknown config key {where!r}{suggest(key, schema.keys())}')
    if key in FREE_FORM:
      continue
    if isinstance(schema[key], ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f'config key {where!r} must be a group of settings, got {value!r}')
      check_keys(value, schema[key], where + '.')


def suggest(key, choices) -> str:
  """' (did you mean X?)' for a close choice, else the known keys."""
  close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
  return f' (did you mean {close[0]!r}?)' if close else f'; known keys: {sorted(choices)}'


# --- a config against its defaults ---------------------------------------------------------

_plain = config_pruning.plain   # the config as plain dicts and tuples


def _canonical(config) -> dict:
  """The config as plain data, `pruning`'s blocks as the flat keys they stand
  for (config_pruning): the one form that is hashed and recorded."""
  plain = _plain(config)
  if isinstance(plain.get('pruning'), Mapping):
    plain['pruning'] = config_pruning.flat_pruning(plain['pruning'])
  return plain


def _merge(base: dict, over: Mapping) -> dict:
  out = dict(base)
  for k, v in over.items():
    if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k not in FREE_FORM:
      out[k] = _merge(out[k], v)
    else:
      out[k] = v
  return out


def with_defaults(config) -> dict:
  """Every key of the schema, the config's value where it sets one, as plain
  dicts and tuples."""
  return _merge(default_config().to_dict(), _canonical(config))


def changed_keys(config: Mapping, defaults: Mapping, prefix='') -> dict:
  out = {}
  for k, v in config.items():
    if isinstance(v, Mapping) and isinstance(defaults.get(k), Mapping) and k not in FREE_FORM:
      out.update(changed_keys(v, defaults[k], f'{prefix}{k}.'))
    elif k not in defaults or defaults[k] != v:
      out[f'{prefix}{k}'] = v
  return out


def changed(config) -> dict:
  """{'dotted.key': value} of the keys whose value differs from the default."""
  return changed_keys(with_defaults(config), _plain(default_config()))


def settings_hash(config: ml_collections.ConfigDict, length: int = 10) -> str:
  """Short hash of the settings that differ from the defaults (OpenLTH's run naming):
  adding a new key with a default does not change old runs' names."""
  text = json.dumps(changed(config), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(_canonical(config), indent=2, sort_keys=True, default=str)


def record(config) -> dict:
  """What a workdir records of its config (config.json): the config as plain
  data and its settings hash."""
  return {'config': _canonical(config), 'settings_hash': settings_hash(config)}


# --- sparsejax config --show ---------------------------------------------------------------

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
  merged = with_defaults(config)
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
