"""A config to typed settings: value checks, the translation of single
config blocks (lottery, finetune, distill, optimizer), and `to_settings`,
which assembles the whole `sparsejax.settings.Settings` (re-exported by
`sparsejax.config`). Every error is a ConfigError naming the key."""

from __future__ import annotations

from typing import Mapping

import ml_collections

from sparsejax import optim
from sparsejax.config_schema import check_keys, with_defaults
from sparsejax.core import allocation as alloc_lib
from sparsejax.programs.lottery import CONTROLS, REWINDS
# The fine-tuning settings are the PEFT program's own dataclass, built here.
from sparsejax.programs.peft_methods import FINETUNE_METHODS, ROW_SCORES, FinetuneSettings
from sparsejax.settings import (ConfigError, DataSettings, DistillSettings,
                                LotterySettings, MeshSettings, ModelSettings, PruningSettings,
                                Settings, TrainSettings)


def bool_value(key: str, value) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'config key {key!r} must be True or False, got {value!r}')
  return value


def positive(name, value, allow_zero=False):
  if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
    raise ConfigError(f'config key {name!r} must be a{" non-negative" if allow_zero else " positive"} '
                      f'integer, got {value!r}')
  return value


DTYPES = ('float32', 'bfloat16', 'float16')


def choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f'config key {name!r} must be one of {list(choices)}, got {value!r}')
  return value


def distill_settings(d: Mapping) -> DistillSettings:
  """The teacher and the keys set (values are checked by the Distill class);
  a key set while distillation is off is an error naming it."""
  teacher = d['teacher']
  if teacher is None:
    teacher = ''
  if not isinstance(teacher, str):
    raise ConfigError(f"config key 'distill.teacher' must be '', 'start' or a path to "
                      f'weights, got {teacher!r}')
  options = {k: v for k, v in d.items() if k != 'teacher' and v is not None}
  if not teacher and options:
    key = sorted(options)[0]
    raise ConfigError(f"config key 'distill.{key}' is set but distillation is off: set "
                      "'distill.teacher' ('start' or a path to the teacher's weights)")
  if options.get('hidden_modules') is not None and not options.get('hidden_weight'):
    raise ConfigError("config key 'distill.hidden_modules' is set but the hidden-state term "
                      "is off: set 'distill.hidden_weight' > 0")
  return DistillSettings(teacher=teacher, options=options)


def finetune_settings(f: Mapping) -> FinetuneSettings:
  for key in ('rows', 'rank', 'score_batches', 'trainable', 'dense_steps'):
    positive(f'finetune.{key}', f[key], allow_zero=True)
  return FinetuneSettings(
      init_from=str(f['init_from'] or ''),
      method=choice('finetune.method', f['method'], FINETUNE_METHODS),
      targets=str(f['targets'] or ''), head=str(f['head'] or ''), rows=f['rows'],
      rank=f['rank'], alpha=float(f['alpha']),
      budget=choice('finetune.budget', f['budget'], ('per_layer', 'global')),
      row_score=choice('finetune.row_score', f['row_score'], ROW_SCORES),
      score_batches=f['score_batches'],
      select=choice('finetune.select', f['select'], ('delta', 'gradient')),
      dense_steps=f['dense_steps'], trainable=f['trainable'])


def lottery_settings(lot: Mapping) -> LotterySettings:
  controls = tuple(lot['controls'])
  for c in controls:
    if c not in CONTROLS:
      raise ConfigError(f"config key 'lottery.controls': unknown control {c!r}; "
                        f'choose from {list(CONTROLS)}')
  frac = lot['prune_fraction']
  if not isinstance(frac, (int, float)) or not 0 < frac < 1:
    raise ConfigError(f"config key 'lottery.prune_fraction' must be in (0, 1), got {frac!r}")
  sparsities = lot['sparsities']
  if isinstance(sparsities, (str, Mapping)) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in sparsities):
    raise ConfigError("config key 'lottery.sparsities' must be a list of numbers, got "
                      f'{sparsities!r}')
  return LotterySettings(
      levels=positive('lottery.levels', lot['levels'], allow_zero=True),
      prune_fraction=float(frac), sparsities=tuple(float(v) for v in sparsities),
      rewind=choice('lottery.rewind', lot['rewind'], REWINDS),
      rewind_step=positive('lottery.rewind_step', lot['rewind_step'], allow_zero=True),
      controls=controls, control_levels=tuple(int(x) for x in lot['control_levels']),
      replicates=positive('lottery.replicates', lot['replicates']))


def optimizer_spec(o: Mapping) -> dict:
  try:
    spec = optim.resolve_spec(o)
    optim.build_optimizer(optim.in_steps(spec, 1), 1)   # names and keywords checked now
    return spec
  except optim.OptimizerError as e:
    raise ConfigError(str(e)) from None


def _writers(value) -> tuple[str, ...]:
  """train.writers: import paths 'pkg.module:fn' of metric-writer factories."""
  items = (value,) if isinstance(value, str) else tuple(value or ())
  for w in items:
    if not isinstance(w, str) or ':' not in w:
      raise ConfigError(f"config key 'train.writers': {w!r} is not an import path "
                        "'pkg.module:fn' of a factory workdir -> metric writer")
  return items


def to_settings(config: ml_collections.ConfigDict) -> Settings:
  """The typed settings of a config; raises ConfigError naming a bad key."""
  merged = with_defaults(config)
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
