"""The lottery program: iterative magnitude pruning as levels, with controls.

Level 0 trains the dense network. Level L prunes `prune_fraction` of the
weights that level L-1 kept (or, with `sparsities`, as much as reaches that
level's target, e.g. the linear schedule of the MNIST-1D notebook), by magnitude of its final weights (per-layer
rates from the allocation's scales and overrides, or one global threshold),
rewinds and trains again with the mask fixed and a fresh optimizer (Frankle
& Carbin 2019). Rewinding: to the initial weights ('init'), to the weights at
step k of level 0 ('step', Frankle et al. 2020), learning-rate rewinding
('lr': keep the final weights, replay the schedule; Renda et al. 2020) or
plain fine-tuning ('none': keep the final weights, train with
`finetune_optimizer`, usually the schedule's final learning rate).

Controls off a level, sharing its per-layer sparsities: 'reinit' (the
ticket's mask, fresh random initial weights), 'random_prune' (a random mask,
the rewind weights) and 'oneshot' (the level-0 dense weights pruned once by
magnitude, the rewind weights). Replicates repeat everything with seeds
seed, seed+1, ...

Every training run is an ordinary `loop.train` workdir under
`root/replicate_R/level_L/<arm>/`, so it resumes exactly; a finished run
(its summary exists) is not trained again.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax
import optax

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria, imp, masks as masks_lib, schedules
from sparsejax.programs import results as results_lib
from sparsejax.train import loop
from sparsejax.train.task import SetupError, Task

REWINDS = ('init', 'step', 'lr', 'none')
CONTROLS = ('reinit', 'random_prune', 'oneshot')


@dataclasses.dataclass(frozen=True)
class Lottery:
  """The lottery's own settings (Frankle & Carbin 2019's defaults)."""
  levels: int = 10
  prune_fraction: float = 0.2
  rewind: str = 'init'
  rewind_step: int = 0
  controls: tuple[str, ...] = ()
  control_levels: tuple[int, ...] = ()      # () = every level
  replicates: int = 1
  allocation: alloc_lib.Allocation = alloc_lib.Allocation()
  sparsities: tuple[float, ...] = ()        # per-level targets; () = prune_fraction
  finetune_optimizer: optax.GradientTransformation | None = None   # for rewind='none'

  def __post_init__(self):
    if self.rewind not in REWINDS:
      raise SetupError(f'rewind must be one of {list(REWINDS)}, got {self.rewind!r}')
    for c in self.controls:
      if c not in CONTROLS:
        raise SetupError(f'unknown control {c!r}; choose from {list(CONTROLS)}')
    if not 0 < self.prune_fraction < 1:
      raise SetupError(f'prune_fraction must be in (0, 1), got {self.prune_fraction!r}')
    if self.rewind == 'none' and self.finetune_optimizer is None:
      raise SetupError("rewind='none' needs finetune_optimizer (the optimizer that keeps "
                       'training the final weights)')
    if self.sparsities:
      object.__setattr__(self, 'sparsities', tuple(float(v) for v in self.sparsities))
      if len(self.sparsities) != self.levels:
        raise SetupError(f'sparsities gives {len(self.sparsities)} levels, levels is '
                         f'{self.levels}: give one target per level')
      if not all(0 < b < 1 and b > a for a, b in zip((0.0,) + self.sparsities,
                                                      self.sparsities)):
        raise SetupError('sparsities must increase strictly within (0, 1), got '
                         f'{self.sparsities!r}')
    if isinstance(self.allocation, str):   # a method's name or import path, as schedules take
      object.__setattr__(self, 'allocation', alloc_lib.Allocation(self.allocation))
    if not isinstance(self.allocation, alloc_lib.Allocation):
      raise SetupError(f'allocation must be an Allocation or a method name, got '
                       f'{self.allocation!r}')
    self.allocation.check_prunes_remaining('the lottery', SetupError)

  def fraction(self, level: int) -> float:
    """The share of the remaining weights that level `level` (>= 1) prunes."""
    if not self.sparsities:
      return self.prune_fraction
    before = self.sparsities[level - 2] if level > 1 else 0.0
    return (self.sparsities[level - 1] - before) / (1 - before)


def run_lottery(task: Task, root, lottery: Lottery = Lottery(), *, progress: bool = False,
                record: dict | None = None,
                log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or resumes) all levels, controls and replicates of `task` under
  `root`; returns the result rows (also written to root/results.jsonl)."""
  import pathlib
  if not isinstance(task.schedule, schedules.Dense):
    raise SetupError('the lottery makes its own masks: give a task with the Dense schedule, '
                     f'not {type(task.schedule).__name__}')
  if not getattr(task.model, 'redraws', True) and (
      'reinit' in lottery.controls or lottery.replicates > 1):
    what = "the 'reinit' control" if 'reinit' in lottery.controls else 'replicates over seeds'
    raise SetupError(f'{what} needs new random weights, but this NNX model was given as a '
                     'built module, whose weights do not depend on the seed; give a factory '
                     'instead: nnx_model(lambda rngs: Net(..., rngs=rngs))')
  if lottery.rewind == 'step' and not 0 <= lottery.rewind_step <= task.loop.steps:
    raise SetupError(f'rewind_step={lottery.rewind_step} is outside the run '
                     f'(0..{task.loop.steps})')
  root = pathlib.Path(root).absolute()
  root.mkdir(parents=True, exist_ok=True)
  snapshots = (lottery.rewind_step,) if lottery.rewind == 'step' else ()
  rows = []
  controlled = [l for l in range(1, lottery.levels + 1)
                if not lottery.control_levels or l in lottery.control_levels]
  total = lottery.replicates * (1 + lottery.levels + len(controlled) * len(lottery.controls))
  count = {'done': 0, 'trained': 0, 'seconds': 0.0}
  log(f'{time.strftime("%H:%M:%S")} lottery run {root}: {total} runs')
  for r in range(lottery.replicates):
    seed = task.loop.seed + r
    rep_task = task.with_loop(seed=seed)
    rep = root / f'replicate_{r}'
    ids = {'replicate': r, 'seed': seed}
    init_variables = jax.jit(rep_task.init_variables)

    def train(level, arm, start=None, masks=None):
      workdir = rep / f'level_{level}' / arm
      t = rep_task if masks is None else rep_task.replace(
          schedule=schedules.FixedMask(masks=masks))
      if level > 0 and lottery.rewind == 'none':
        t = t.replace(optimizer=lottery.finetune_optimizer)
      started, trained = time.perf_counter(), not (workdir / 'summary.json').exists()
      if not trained:
        params, model_state, masks = results_lib.final_weights(workdir)
      else:
        result = loop.train(t, workdir, start=start, progress=progress,
                            snapshots=snapshots if level == 0 else (),
                            record={**(record or {}), 'level': level, 'arm': arm},
                            log=lambda text: None)
        state = jax.device_get(result.state)
        params, model_state, masks = state.params, state.model_state, jax.device_get(
            result.masks)
      row = results_lib.run_row(workdir, **ids, level=level, arm=arm)
      rows.append(row)
      count['done'] += 1
      if trained:
        count['trained'] += 1
        count['seconds'] += time.perf_counter() - started
      log(f'{time.strftime("%H:%M:%S")} [{count["done"]}/{total}] replicate {r} level '
          f'{level:2d} {arm:12s} {100 * row["density"]:6.2f}% weights, test acc '
          f'{row["final"].get("test_accuracy", float("nan")):.4f}{_eta(count, total)}')
      return workdir, params, model_state, masks

    dense_dir, dense_final, final_state, prev_masks = train(0, 'ticket')
    init_params, init_state = results_lib.named_weights(dense_dir, 'init')
    if lottery.rewind == 'step':
      rewind_params, rewind_state = results_lib.named_weights(
          dense_dir, f'step_{lottery.rewind_step}')
    else:
      rewind_params, rewind_state = init_params, init_state
    final = dense_final
    for level in range(1, lottery.levels + 1):
      masks = jax.device_get(_pruner(lottery, level)(final, prev_masks))
      if lottery.rewind in ('init', 'step'):
        start = loop.Start(_masked(rewind_params, masks), rewind_state)
      else:
        start = loop.Start(_masked(final, masks), final_state)
      _, final, final_state, prev_masks = train(level, 'ticket', start, masks)
      if not lottery.control_levels or level in lottery.control_levels:
        key = jax.random.fold_in(jax.random.key(seed), 1000 + level)
        for arm in lottery.controls:
          if arm == 'reinit':
            fresh_key = jax.random.fold_in(jax.random.key(seed), 2_000_000 + level)
            fresh = jax.device_get(init_variables(fresh_key)['params'])
            train(level, arm, loop.Start(_masked(fresh, masks), rewind_state), masks)
          elif arm == 'random_prune':
            m = jax.device_get(_random_like(rewind_params, masks, key))
            train(level, arm, loop.Start(_masked(rewind_params, m), rewind_state), m)
          elif arm == 'oneshot':
            m = jax.device_get(_magnitude_like(dense_final, masks))
            train(level, arm, loop.Start(_masked(rewind_params, m), rewind_state), m)
  results_lib.write_rows(root / 'results.jsonl', rows)
  return rows


# The pruning between levels as compiled programs (run op by op it costs
# more than a short level's training on a small model).
_random_like = jax.jit(
    lambda params, masks, key: imp.same_counts(criteria.random(params, None, key), masks))
_magnitude_like = jax.jit(
    lambda params, masks: imp.same_counts(criteria.magnitude(params), masks))
_PRUNERS: dict = {}


def _pruner(lottery: Lottery, level: int):
  """jit(prune_remaining) at level `level`'s fraction, one program per
  (lottery, fraction): with a constant prune_fraction every level shares it."""
  key = (id(lottery), lottery.fraction(level))
  if key not in _PRUNERS:
    if len(_PRUNERS) > 64:
      _PRUNERS.clear()
    _PRUNERS[key] = (lottery, jax.jit(functools.partial(
        imp.prune_remaining, fraction=key[1], allocation=lottery.allocation)))
  return _PRUNERS[key][1]


def _eta(count: dict, total: int) -> str:
  """', ETA ...' from the mean time of the runs trained so far (runs found
  finished on a resume cost nothing and are left out), else ''."""
  left = total - count['done']
  if not left or not count['trained']:
    return ''
  seconds = int(round(left * count['seconds'] / count['trained']))
  return f', ETA {seconds // 60}m{seconds % 60:02d}s'


def _masked(params, masks):
  return jax.device_get(masks_lib.apply_masks(params, masks))
