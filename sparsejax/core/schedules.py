"""Schedule modules: when and how the mask changes.

Every schedule speaks the traced protocol `protocol.SparsitySchedule`, so a
config swaps one for another:

  init(params, rule) -> (masks, state)     once, outside the train step
  should_update(step) -> bool               traced, inside jit
  update(masks, params, grads, step, state) -> (masks, state)
                                            traced, run under lax.cond
  accumulate(state, params, grads, step) -> state
                                            traced, on every step (default:
                                            state unchanged)

`Schedule` is the convenience base implementing it, with what every schedule
needs around it on the host: `for_run(total_steps)` (step fields given as
fractions of the run become steps, and settings that would not do what they
say raise), `update_steps(n)` / `updates_at(step)` (the steps that need the
update program of `sparsify(..., update='separate')`), `describe`, and
helpers for scores and masks. What only some schedules need is a capability
mixin of `protocol` instead: rewinding (IMP), straight-through (STE), binding
to the model (at-init criteria), program sharing (Dense, FixedMask).

`update` must return masks and state with the same structure, shapes and
dtypes as it received. The `sparsify` transformation does the rest (masking
gradients, zeroing pruned weights, resetting optimizer moments). A new
schedule is a subclass in its own file plus one line in `registry.SCHEDULES`
(or, from a config, an import path `pkg.module:Class`); its settings are its
dataclass fields and their defaults are the class's.

Why this module is longer than 300 lines: besides the base it holds the four
simple schedules (Dense, OneShot, Gradual, FixedMask). A class's module is
part of its recorded name (`describe()['type']`, written into every run's
config.json and compared on resume), so moving them would change what
recorded runs say.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import compat
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import masks as masks_lib
from sparsejax.core import protocol
from sparsejax.core import prune as prune_lib
from sparsejax.core import select
from sparsejax.core import tree as tree_lib
from sparsejax.core.fields import describe as _describe, fields_key, same_units_ordered

PyTree = Any


def shapes_of(masks: PyTree) -> dict[str, tuple[int, ...]]:
  return {p: tuple(m.shape) for p, m in tree_lib.leaves_with_paths(masks)}


class ScheduleError(ValueError):
  """Settings a schedule cannot run as asked; the message names the setting."""


@dataclasses.dataclass(frozen=True)
class Schedule(compat.CapabilityDefaults):
  """Base: a target sparsity, a criterion, an allocation and a pattern.

  Implements `protocol.SparsitySchedule` (no mask change by default). The
  capability defaults it inherits from `compat` are deprecated."""
  sparsity: float = 0.0
  criterion: str | Callable = 'magnitude'
  allocation: alloc_lib.Allocation = alloc_lib.Allocation()
  pattern: Any = select.Unstructured()
  seed: int = 0

  # Fields that count steps; a float in [0, 1] there is a fraction of the run,
  # resolved by `for_run`.
  step_fields: ClassVar[tuple[str, ...]] = ()
  # False for schedules whose mask never changes after `init` (the loop then
  # records no mask dynamics).
  changes_mask: ClassVar[bool] = True

  @property
  def needs_start(self) -> bool:
    """True when the schedule cannot start from a fresh initialisation."""
    return False

  def __post_init__(self):
    alloc_lib.check_sparsity(self.sparsity)
    if isinstance(self.allocation, str):
      object.__setattr__(self, 'allocation', alloc_lib.Allocation(self.allocation))
    if isinstance(self.pattern, str):
      object.__setattr__(self, 'pattern', select.make_pattern(self.pattern))
    fixed = getattr(self.pattern, 'sparsity', None)    # N:M keeps n of every m
    if fixed is not None and self.sparsity and abs(self.sparsity - fixed) > 1e-9:
      raise ScheduleError(
          f'sparsity={self.sparsity} with pattern {self.pattern.n}:{self.pattern.m}, which keeps '
          f'{self.pattern.n} of every {self.pattern.m} weights: it would train at sparsity '
          f'{fixed:g}; set sparsity={fixed:g} (or leave it at 0) or use another pattern')
    self.check_criterion()

  def check_criterion(self) -> None:
    criteria_lib.get_criterion(self.criterion)

  # -- the interface -----------------------------------------------------------
  def init(self, params: PyTree, rule: Callable = tree_lib.DEFAULT_RULE):
    masks = masks_lib.dense_masks(params, rule)
    prune_lib.check_pattern(self.pattern, shapes_of(masks))
    return masks, ()

  def should_update(self, step) -> jax.Array:
    del step
    return jnp.asarray(False)

  def update(self, masks, params, grads, step, state):
    del params, grads, step
    return masks, state

  def accumulate(self, state, params, grads, step):
    """Per-step work on the schedule state, run by `sparsify` on every step
    (both update modes) before the mask update, with the gradients `update`
    gets; for statistics gathered between updates (movement scores). Must
    keep the state's structure, shapes and dtypes. The default returns
    `state` unchanged, so the step gains no operations."""
    del params, grads, step
    return state

  # -- host side: which steps run the update program ---------------------------
  def needs_update(self, step) -> jax.Array:
    """should_update, or should_rewind for rewinding schedules (traced or not)."""
    return protocol.needs_update(self, step)

  def updates_at(self, step: int) -> bool:
    """Host side: True when count `step` (a Python int) needs the update
    program (`tx.update(..., update_masks=True)` of `sparsify(...,
    update='separate')`)."""
    return bool(self.needs_update(step))

  def update_steps(self, total: int) -> list[int]:
    """Host side: the counts in [0, total) that need the update program, from
    one vectorised evaluation of the traced predicates (so any schedule works)."""
    if total <= 0:
      return []
    flags = jax.jit(jax.vmap(self.needs_update))(jnp.arange(total, dtype=jnp.int32))
    return [int(i) for i in np.flatnonzero(np.asarray(flags))]

  # -- before a run ----------------------------------------------------------------
  def for_run(self, total_steps: int) -> 'Schedule':
    """This schedule for a run of `total_steps`: fractional step fields become
    steps; settings that would silently not do what they say raise
    ScheduleError (see `check_run`)."""
    resolved = {}
    for name in self.step_fields:
      v = getattr(self, name)
      if isinstance(v, float):
        if not 0.0 <= v <= 1.0:
          raise ScheduleError(f'{type(self).__name__}.{name}={v}: a float is a fraction of '
                              'the run and must be in [0, 1]; give steps as an integer')
        resolved[name] = int(round(v * total_steps))
    out = dataclasses.replace(self, **resolved) if resolved else self
    out.check_run(total_steps)
    return out

  def check_run(self, total_steps: int) -> None:
    """Raises ScheduleError when the run would not do what the settings say."""
    del total_steps

  def warnings(self, total_steps: int) -> list[str]:
    """Settings that still mean something for this run but may not be what was
    meant; the loop prints them and records them in the workdir."""
    del total_steps
    return []

  def describe(self) -> dict:
    """Type and every field, JSON-friendly: what ran, for config.json and summaries."""
    out = {'type': f'{type(self).__module__}.{type(self).__qualname__}'}
    for f in dataclasses.fields(self):
      out[f.name] = _describe(getattr(self, f.name))
    return out

  # -- helpers for subclasses ----------------------------------------------------
  def key(self, step) -> jax.Array:
    return jax.random.fold_in(jax.random.key(self.seed), step)

  def scores(self, params, grads, step):
    return criteria_lib.get_criterion(self.criterion)(params, grads, self.key(step))

  def layer_sparsities(self, masks, sparsity=None) -> dict:
    """Host-side per-leaf sparsities (None: in the global pool) at `sparsity`."""
    return self.allocation.layer_sparsities(
        shapes_of(masks), self.sparsity if sparsity is None else sparsity)

  def masks_at(self, masks, scores, per_leaf=None, global_sparsity=None, fraction=1.0):
    """Masks keeping the top scores among the active weights, at `fraction`
    of the per-leaf sparsities (default: the target's). Values may be traced."""
    per_leaf = self.layer_sparsities(masks) if per_leaf is None else per_leaf
    global_sparsity = self.sparsity if global_sparsity is None else global_sparsity
    keep = {p: None if s is None else prune_lib.keep_at_sparsity(s * fraction)
            for p, s in per_leaf.items()}
    global_keep = prune_lib.keep_at_sparsity(global_sparsity * fraction)
    return prune_lib.select_masks(scores, masks, keep, self.pattern, global_keep,
                                  eligible=masks)


@dataclasses.dataclass(frozen=True)
class Dense(protocol.SharesPrograms, Schedule):
  """No pruning: the masks stay all-True (the dense baseline)."""
  changes_mask: ClassVar[bool] = False

  def program_key(self):
    return fields_key(self)

  def update_steps(self, total):
    return []

  def __post_init__(self):
    super().__post_init__()
    if self.sparsity:
      raise ScheduleError(f'dense does not prune, but sparsity={self.sparsity}; pick a '
                          'schedule that prunes (oneshot, gradual, at_init, set, rigl, ...)')


@dataclasses.dataclass(frozen=True)
class OneShot(Schedule):
  """Prune once, to the target sparsity, at step `at_step`."""
  at_step: int = 0
  step_fields: ClassVar[tuple[str, ...]] = ('at_step',)

  def should_update(self, step):
    return step == self.at_step

  def check_run(self, total_steps):
    if self.at_step >= total_steps:
      raise ScheduleError(f'oneshot at_step={self.at_step} is not before the end of the '
                          f'run ({total_steps} steps): it would never prune')

  def update(self, masks, params, grads, step, state):
    return self.masks_at(masks, self.scores(params, grads, step)), state


@dataclasses.dataclass(frozen=True)
class Gradual(Schedule):
  """Gradual pruning with the cubic schedule of Zhu & Gupta (2017).

  s_t = s_f + (s_i - s_f) (1 - (t - start) / (end - start))^3 on steps
  start, start + every, ... and at `end` (even if off the grid), so the target
  is always reached; each leaf follows the curve towards its own final
  sparsity. Pruned weights never come back.
  """
  start: int = 0
  end: int = 1000
  every: int = 100
  initial_sparsity: float = 0.0
  step_fields: ClassVar[tuple[str, ...]] = ('start', 'end')

  def __post_init__(self):
    super().__post_init__()
    alloc_lib.check_sparsity(self.initial_sparsity, 'initial_sparsity')
    if self.start < 0 or self.every < 1 or not same_units_ordered(self.start, self.end):
      raise ScheduleError(f'gradual schedule needs 0 <= start < end and every >= 1, got '
                       f'start={self.start}, end={self.end}, every={self.every}')

  def check_run(self, total_steps):
    if not self.start < self.end:   # steps and fractions mixed: checked once resolved
      raise ScheduleError(f'gradual needs start < end, got start={self.start}, '
                          f'end={self.end} (in steps of this {total_steps}-step run)')
    if self.end > total_steps:
      reached = float(self.sparsity_at(total_steps))
      raise ScheduleError(
          f'gradual end={self.end} lies beyond the run ({total_steps} steps): it would stop at '
          f'{reached:.1%} sparsity instead of {self.sparsity:.1%}; set end <= {total_steps} '
          '(or a fraction of the run such as end=0.75)')

  def sparsity_at(self, step) -> jax.Array:
    return optax.polynomial_schedule(self.initial_sparsity, self.sparsity, 3,
                                     self.end - self.start, self.start)(step)

  def should_update(self, step):
    on_grid = (step - self.start) % self.every == 0
    return (step >= self.start) & (step <= self.end) & (on_grid | (step == self.end))

  def update(self, masks, params, grads, step, state):
    if self.sparsity == 0:
      return masks, state
    fraction = self.sparsity_at(step) / self.sparsity
    return self.masks_at(masks, self.scores(params, grads, step), fraction=fraction), state


@dataclasses.dataclass(frozen=True)
class FixedMask(protocol.SharesPrograms, Schedule):
  """Sparse fine-tuning with a mask that never changes.

  The mask is `masks` when given, else the non-zeros of the params that
  `init` sees (a pruned checkpoint).
  """
  masks: PyTree = None
  changes_mask: ClassVar[bool] = False

  def __post_init__(self):
    super().__post_init__()
    if self.sparsity and self.masks is None:
      raise ScheduleError(
          f'fixed takes its mask from the zeros of the weights it starts from, so '
          f'sparsity={self.sparsity} would be ignored; prune first (oneshot, or finetune '
          'with a pruned checkpoint) or pass masks')

  @property
  def needs_start(self):
    return self.masks is None

  def program_key(self):
    # The mask is read only by `init`: the step sees it in the state.
    shapes = None if self.masks is None else tuple(sorted(shapes_of(self.masks).items()))
    return fields_key(self, skip=('masks',)) + (shapes,)

  def update_steps(self, total):
    return []

  def init_data(self):
    return self.masks

  def with_init_data(self, data):
    return self if data is None else dataclasses.replace(self, masks=data)

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    if self.masks is None:
      return masks_lib.masks_from_zeros(params, rule), ()
    return masks_lib.validate_masks(self.masks, params), ()
