"""Value checks and the translation of single config blocks (lottery,
finetune, distill, optimizer) into typed settings; `config.to_settings`
assembles the whole. Every error is a ConfigError naming the key."""

from __future__ import annotations

from typing import Mapping

from sparsejax import optim
from sparsejax.settings import (CONTROLS, FINETUNE_METHODS, REWINDS, ROW_SCORES, ConfigError,
                                DistillSettings, FinetuneSettings, LotterySettings)


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
