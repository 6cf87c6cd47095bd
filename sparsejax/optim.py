"""Optimizer specs: turn a plain Mapping into an optax optimizer.

A spec names any optax optimizer (or a user's `'pkg.module:function'` with the
same calling convention), its keyword options, gradient transforms to apply
before it and a learning-rate schedule, so configs stay plain data. Options are
checked against the function's signature so a typo fails at build time with the
key's name, not as a silent default. Pure optax/JAX: nothing from sparsejax but
the name resolver (`core.imports`).
"""

import inspect
import math
from collections.abc import Mapping, Sequence

import optax
from optax import contrib

from sparsejax.core import imports

OPTIMIZER_DEFAULTS = dict(
    name='adam', learning_rate=1e-3, options={}, chain=(), schedule='constant',
    warmup_steps=0, decay_steps=0, end_factor=0.0, plateau_factor=0.5, plateau_patience=5,
    plateau_steps=100, milestones=(), decay_every=0, gamma=0.1, unit='steps', accumulate=1)
SCHEDULES = ('constant', 'cosine', 'linear', 'step', 'plateau')
# Keys counted in `unit` (steps, or epochs that the caller turns into steps).
STEP_KEYS = ('warmup_steps', 'decay_steps', 'milestones', 'decay_every')


class OptimizerError(ValueError):
  """A bad optimizer spec; `key` names the offending entry (e.g. 'optimizer.chain[1]')."""

  def __init__(self, key, message):
    super().__init__(message)
    self.key = key


def _close(word, choices, n=3):
  """' (did you mean ...?)' for the nearest `choices`, or ''."""
  return imports.did_you_mean(imports.close_matches(word, choices, n))


def _int(spec, key, minimum):
  v = spec[key]
  if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
    raise OptimizerError(f'optimizer.{key}', f'optimizer.{key} must be an int >= {minimum}, got {v!r}')
  return v


def _number(spec, key, ok, what):
  v = spec[key]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
    raise OptimizerError(f'optimizer.{key}', f'optimizer.{key} must be {what}, got {v!r}')
  return float(v)


def resolve_spec(spec: Mapping) -> dict:
  """The spec with defaults filled in and every value checked; raises OptimizerError."""
  if not isinstance(spec, Mapping):
    raise OptimizerError('optimizer', f'optimizer spec must be a mapping, got {type(spec).__name__}')
  for key in spec:
    if key not in OPTIMIZER_DEFAULTS:
      hint = _close(key, OPTIMIZER_DEFAULTS) or " (the optimizer's keywords go under 'options')"
      raise OptimizerError(f'optimizer.{key}', f'optimizer key {key!r} is unknown{hint}')
  s = {**OPTIMIZER_DEFAULTS, **spec}
  if not isinstance(s['name'], str) or not s['name']:
    raise OptimizerError('optimizer.name',
                         f"optimizer.name must be a non-empty string, got {s['name']!r}")
  if not isinstance(s['options'], Mapping):
    raise OptimizerError('optimizer.options',
                         f"optimizer.options must be a mapping, got {s['options']!r}")
  if isinstance(s['chain'], (str, Mapping)) or not isinstance(s['chain'], Sequence):
    raise OptimizerError('optimizer.chain', f"optimizer.chain must be a list, got {s['chain']!r}")
  if s['schedule'] not in SCHEDULES:
    raise OptimizerError('optimizer.schedule', f"optimizer.schedule {s['schedule']!r} is not one of "
                         f"{', '.join(SCHEDULES)}{_close(s['schedule'], SCHEDULES)}")
  s['learning_rate'] = _number(s, 'learning_rate', lambda v: v > 0, 'a positive number')
  s['end_factor'] = _number(s, 'end_factor', lambda v: 0 <= v <= 1, 'a number in [0, 1]')
  s['plateau_factor'] = _number(s, 'plateau_factor', lambda v: 0 < v < 1, 'a number in (0, 1)')
  for key, minimum in (('warmup_steps', 0), ('decay_steps', 0), ('accumulate', 1),
                       ('plateau_patience', 1), ('plateau_steps', 1), ('decay_every', 0)):
    _int(s, key, minimum)
  s['gamma'] = _number(s, 'gamma', lambda v: 0 < v <= 1, 'a number in (0, 1]')
  if s['unit'] not in ('steps', 'epochs'):
    raise OptimizerError('optimizer.unit', f"optimizer.unit must be 'steps' or 'epochs', got "
                         f"{s['unit']!r}")
  milestones = s['milestones']
  if isinstance(milestones, (str, Mapping)) or not isinstance(milestones, Sequence) or any(
      isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) or list(
          milestones) != sorted(set(milestones)):
    raise OptimizerError('optimizer.milestones', 'optimizer.milestones must be increasing '
                         f'positive integers, got {milestones!r}')
  s['milestones'] = tuple(milestones)
  if s['schedule'] == 'step' and bool(s['milestones']) == bool(s['decay_every']):
    raise OptimizerError('optimizer.milestones', "optimizer.schedule 'step' needs either "
                         'milestones or decay_every (not both)')
  return s


def in_steps(spec: Mapping, steps_per_epoch: int) -> dict:
  """The spec with its step counts (STEP_KEYS) in steps: epochs times
  `steps_per_epoch` when unit is 'epochs'."""
  s = resolve_spec(spec)
  if s['unit'] == 'steps':
    return s
  s = dict(s, unit='steps')
  for key in STEP_KEYS:
    v = s[key]
    s[key] = tuple(m * steps_per_epoch for m in v) if key == 'milestones' else v * steps_per_epoch
  return s


def _resolve(name, where):
  """`getattr(optax, name)`, or the object at import path 'pkg.module:attr'
  (`core.imports.resolve` over optax's namespace)."""
  try:
    obj = imports.resolve(name, imports.Namespace(optax), 'function')
  except imports.UnknownName:
    public = [n for n in dir(optax) if not n.startswith('_') and callable(getattr(optax, n))]
    hint = (f"write 'optax.contrib:{name}'" if isinstance(name, str) and hasattr(contrib, name) else
            "a user function is written 'pkg.module:function'")
    raise OptimizerError(where, f'{where}: optax has no {name!r}{_close(name, public, 5)}; {hint}'
                         ) from None
  except ValueError as e:     # an import path that does not import
    raise OptimizerError(where, f'{where}: {e}') from None
  if not callable(obj):
    raise OptimizerError(where, f'{where}: {name!r} is not callable')
  return obj


def _call(fn, name, kwargs, where):
  """fn(**kwargs) after checking every keyword against fn's signature."""
  if not isinstance(kwargs, Mapping):
    raise OptimizerError(where, f'{where}: keyword arguments must be a mapping, got {kwargs!r}')
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):  # no signature to check against (e.g. a builtin)
    return fn(**kwargs)
  params = sig.parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    takes = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
      if key not in takes:
        raise OptimizerError(where, f'{where}: {key!r} is not a keyword of {name}'
                             f"{_close(key, takes)}; it takes: {', '.join(takes) or 'none'}")
  try:
    sig.bind(**kwargs)
  except TypeError as e:
    raise OptimizerError(where, f'{where}: {name}: {e}') from None
  return fn(**kwargs)


def learning_rate_fn(spec: Mapping, total_steps: int) -> optax.Schedule:
  """The schedule: linear warmup 0 -> learning_rate over warmup_steps, then constant,
  cosine or linear decay to learning_rate*end_factor over decay_steps (0: the rest
  of total_steps, at least 1). 'plateau' is constant here; its reductions live in
  the optimizer state (`ReduceLROnPlateauState.scale`) and multiply the updates.
  Steps count optimizer updates, not micro-batches under `accumulate`."""
  s = resolve_spec(spec)
  if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 0:
    raise OptimizerError('total_steps', f'total_steps must be an int >= 0, got {total_steps!r}')
  lr, warmup, kind = s['learning_rate'], s['warmup_steps'], s['schedule']
  decay = s['decay_steps'] or max(total_steps - warmup, 1)
  if s['unit'] != 'steps':
    raise OptimizerError('optimizer.unit', "the schedule counts steps: convert with "
                         'in_steps(spec, steps_per_epoch) first')
  if kind == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay, alpha=s['end_factor'])
  elif kind == 'step' and s['decay_every']:     # lr * gamma^floor((t - warmup) / every)
    main = optax.exponential_decay(lr, s['decay_every'], s['gamma'], staircase=True)
  elif kind == 'step':                          # milestones count from step 0, warmup included
    main = optax.piecewise_constant_schedule(
        lr, {m - warmup: s['gamma'] for m in s['milestones'] if m > warmup})
  elif kind == 'linear':
    main = optax.linear_schedule(lr, lr * s['end_factor'], decay)
  else:
    main = optax.constant_schedule(lr)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def build_optimizer(spec: Mapping, total_steps: int
                    ) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
  """(tx, schedule): chain(*spec.chain, optimizer(learning_rate=schedule, **options)
  [, reduce_on_plateau]). tx accepts extra args, so a train step can always call
  `tx.update(grads, state, params, value=loss)`; 'plateau' requires `value`.
  `spec.accumulate` is validated but NOT applied: wrap with `accumulate(tx, k)`
  yourself, outermost (around any masking wrapper), so that the inner optimizer
  and its count only see real updates."""
  s = resolve_spec(spec)
  schedule = learning_rate_fn(s, total_steps)
  parts = []
  for i, item in enumerate(s['chain']):
    where = f'optimizer.chain[{i}]'
    if isinstance(item, str):
      name, kwargs = item, {}
    elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
      name, kwargs = item
    else:
      raise OptimizerError(where, f"{where} must be a name or a pair (name, kwargs), got {item!r}")
    parts.append(_call(_resolve(name, where), name, kwargs, where))
  name, options = s['name'], s['options']
  fn = _resolve(name, 'optimizer.name')
  if 'learning_rate' in options:
    raise OptimizerError('optimizer.options', "optimizer.options: set 'learning_rate' at the top "
                         'level of the spec; it becomes the schedule')
  parts.append(_call(fn, name, {'learning_rate': schedule, **options}, 'optimizer.options'))
  if s['schedule'] == 'plateau':
    parts.append(contrib.reduce_on_plateau(
        factor=s['plateau_factor'], patience=s['plateau_patience'],
        accumulation_size=s['plateau_steps']))
  return optax.chain(*parts), schedule


def accumulate(tx: optax.GradientTransformation, k: int) -> optax.GradientTransformationExtraArgs:
  """Gradient accumulation over k micro-steps via `optax.MultiSteps` (k == 1: tx as is).

  Wrap the outermost transformation (e.g. `accumulate(sparsify(inner, sched), k)`)
  so masks, counts and schedules advance once per real update. The result is a
  GradientTransformationExtraArgs over MultiSteps' init/update: a bare MultiSteps
  object or its `.gradient_transformation()` would lose `value=` inside
  `optax.chain`/`with_extra_args_support`. MultiSteps passes extra args on every
  micro-step but keeps inner state only on the k-th, so a reduce_on_plateau inside
  sees the last micro-batch's `value` of each group."""
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise OptimizerError('optimizer.accumulate', f'optimizer.accumulate must be an int >= 1, got {k!r}')
  if k == 1:
    return optax.with_extra_args_support(tx)
  ms = optax.MultiSteps(tx, every_k_schedule=k)
  return optax.GradientTransformationExtraArgs(ms.init, ms.update)
