"""Dynamic sparse training: the mask moves while the active count stays fixed.

SET (Mocanu et al. 2018) and RigL (Evci et al. 2020) share the drop step:
every `every` steps until `end`, each leaf drops round(d_t * k) of its k
active weights with the smallest |w|, d_t decaying from `drop_fraction` to 0
by a cosine at `end` (RigL's default; 'constant' gives SET's fixed rate). They
differ in growth: SET grows at random, RigL where the dense gradient |g| is
largest. SET's random order of single weights is a hash of each weight's
index with two words drawn per leaf and step (`select.random_keys`): as
uniform as a float draw per weight, without ties, and far cheaper on CPU. Growth may pick a weight that was just dropped (it then keeps its
value); newly grown weights start at exactly 0 and the `sparsify`
transformation resets their optimizer moments.

Patterns: with N:M (e.g. 2:4, Zhou et al. 2021), the leaf drops its
round(d_t * k) smallest active |w| as above, and each group of M then regrows
as many as it lost, from its own inactive weights, so every group keeps
exactly N (a per-group drop count would turn d_t into a step function of N).
Block and row/channel patterns drop and grow whole units, a unit scored by
the pattern's reduction (sum by default) of its members' |w| or |g|.

Leaves of the same shape share one compiled update body (`stacked.map_stacked`,
a `lax.map` over them), so compile time grows with the number of distinct
shapes rather than with depth; the masks are the same as a loop over leaves.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import select, stacked
from sparsejax.core import tree as tree_lib
from sparsejax.core.fields import same_units_ordered
from sparsejax.core.schedules import Schedule, ScheduleError


def drop_grow(mask, drop_scores, grow_scores, drop_fraction):
  """New mask with the same count: drop the lowest active, grow the highest
  inactive. `grow_scores` are float scores, or uint32 keys as
  `select.random_keys` gives them (used as they are)."""
  k = jnp.sum(mask, dtype=jnp.int32)
  n_drop = jnp.round(jnp.asarray(drop_fraction, jnp.float32) * k).astype(jnp.int32)
  survivors = select.topk_mask(drop_scores, k - n_drop, where=mask)
  if grow_scores.dtype == jnp.uint32:
    grow_keys = jnp.where(survivors, select.EXCLUDED, grow_scores)
  else:
    grow_keys = select.ordered_keys(grow_scores, ~survivors)
  return survivors | select.topk_mask_from_keys(grow_keys, n_drop)


def drop_grow_nm(pattern: select.NM, mask, drop_scores, grow_scores, drop_fraction):
  """drop_grow for N:M: drops as `drop_grow` over the leaf, then each group
  regrows what it lost from its own inactive entries (it keeps n of m)."""
  k = jnp.sum(mask, dtype=jnp.int32)
  n_drop = jnp.round(jnp.asarray(drop_fraction, jnp.float32) * k).astype(jnp.int32)
  survivors = select.topk_mask(drop_scores, k - n_drop, where=mask)
  lost = pattern.group_counts(mask) - pattern.group_counts(survivors)
  return survivors | pattern.select(grow_scores, ~survivors, counts=lost)


def drop_grow_units(pattern, mask, drop_scores, grow_scores, drop_fraction):
  """drop_grow over the units of a block or row/channel pattern: a unit is
  active, dropped or grown whole (`mask` must be unit-aligned)."""
  drop_keys = pattern.unit_keys(drop_scores, mask)
  k = jnp.sum(drop_keys != select.EXCLUDED, dtype=jnp.int32)
  n_drop = jnp.round(jnp.asarray(drop_fraction, jnp.float32) * k).astype(jnp.int32)
  survivors = select.topk_mask_from_keys(drop_keys, k - n_drop)
  grow_keys = pattern.unit_keys(grow_scores, pattern.expand(~survivors, mask.shape))
  grown = select.topk_mask_from_keys(grow_keys, n_drop)
  return pattern.expand(survivors | grown, mask.shape)


def pattern_drop_grow(pattern):
  """The drop-and-grow function for `pattern` (mask, drop, grow, fraction) -> mask."""
  if isinstance(pattern, select.Unstructured):
    return drop_grow
  if isinstance(pattern, select.NM):
    return functools.partial(drop_grow_nm, pattern)
  if hasattr(pattern, 'unit_keys') and hasattr(pattern, 'expand'):
    return functools.partial(drop_grow_units, pattern)
  raise ValueError(f'dynamic sparse training needs unstructured, N:M or a unit pattern '
                   f'(with unit_keys and expand), not {getattr(pattern, "name", pattern)!r}')


@dataclasses.dataclass(frozen=True)
class RigL(Schedule):
  """RigL: random sparse init (ERK by default), grow by dense gradient magnitude."""
  allocation: alloc_lib.Allocation = alloc_lib.Allocation('erk')
  every: int = 100
  start: int = 0
  end: int = 10_000
  drop_fraction: float = 0.3
  decay: str = 'cosine'
  grow: str = 'gradient'
  step_fields: ClassVar[tuple[str, ...]] = ('start', 'end')

  def __post_init__(self):
    super().__post_init__()
    if self.allocation.is_global:
      per_layer = ', '.join(n for n, c in alloc_lib.ALLOCATIONS.items() if not c.pooled)
      raise ValueError(f'{type(self).__name__} keeps per-layer counts; use an allocation '
                       f'that sets each layer ({per_layer}), not {self.allocation.method}')
    pattern_drop_grow(self.pattern)
    if self.decay not in ('cosine', 'constant'):
      raise ValueError(f"decay must be 'cosine' or 'constant', got {self.decay!r}")
    if self.grow not in ('gradient', 'random'):
      raise ValueError(f"grow must be 'gradient' or 'random', got {self.grow!r}")
    if not 0.0 <= self.drop_fraction <= 1.0:
      raise ValueError(f'drop_fraction must be in [0, 1], got {self.drop_fraction}')
    if self.every < 1 or self.start < 0 or not same_units_ordered(self.start, self.end):
      raise ScheduleError(f'need every >= 1 and 0 <= start < end, got every={self.every}, '
                          f'start={self.start}, end={self.end}')

  def first_update(self) -> int:
    """The first step on which the mask moves."""
    return max(self.every, -(-self.start // self.every) * self.every)

  def check_run(self, total_steps):
    if not self.start < self.end:   # steps and fractions mixed: checked once resolved
      raise ScheduleError(f'{type(self).__name__.lower()} needs start < end, got '
                          f'start={self.start}, end={self.end} (in steps of this '
                          f'{total_steps}-step run)')
    last = min(self.end, total_steps)
    if self.drop_fraction > 0 and self.first_update() >= last:
      raise ScheduleError(
          f'{type(self).__name__.lower()} would never change its mask: the first update is at '
          f'step {self.first_update()} (every={self.every}, start={self.start}) but updates '
          f'stop at step {last} (end={self.end}, {total_steps} steps in the run)')

  def warnings(self, total_steps):
    if self.end > total_steps and self.decay == 'cosine' and self.drop_fraction > 0:
      left = float(self.drop_fraction_at(total_steps))
      return [f'{type(self).__name__.lower()}: end={self.end} lies beyond the run '
              f'({total_steps} steps), so the drop fraction decays only to {left:.3f}, not 0; '
              f'set end (e.g. end=0.75 of the run) to finish the decay']
    return []

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    masks, state = super().init(params, rule)
    scores = criteria_lib.random(params, None, jax.random.fold_in(self.key(0), 1))
    return self.masks_at(masks, scores), state

  def drop_fraction_at(self, step):
    if self.decay == 'constant':
      return jnp.asarray(self.drop_fraction, jnp.float32)
    return optax.cosine_decay_schedule(self.drop_fraction, self.end)(step)

  def should_update(self, step):
    return ((step > 0) & (step >= self.start) & (step < self.end)
            & (step % self.every == 0))

  def update(self, masks, params, grads, step, state):
    d = self.drop_fraction_at(step)
    drop_grow_fn = pattern_drop_grow(self.pattern)
    params_at = dict(tree_lib.leaves_with_paths(params))
    if self.hashes_growth:     # the keys are made inside the body from the leaf's index
      key = self.key(step)
      index = {path: i for i, (path, _) in enumerate(tree_lib.leaves_with_paths(params))}

      def body(m, w, i):
        keys = select.random_keys(m.shape, jax.random.fold_in(key, i))
        return drop_grow_fn(m, jnp.abs(w), keys, d)
      calls = {path: (m, params_at[path], jnp.int32(index[path]))
               for path, m in tree_lib.leaves_with_paths(masks)}
    else:
      grow = self.grow_scores(params, grads, step)

      def body(m, w, g):
        return drop_grow_fn(m, jnp.abs(w), g, d)
      calls = {path: (m, params_at[path], grow[path])
               for path, m in tree_lib.leaves_with_paths(masks)}
    new = stacked.map_stacked(body, calls)
    return tree_lib.map_with_path(lambda path, m: new[path], masks), state

  @property
  def hashes_growth(self) -> bool:
    """Whether growth ranks single weights by `select.random_keys` (random
    growth, unstructured), which `update` hashes inside the per-leaf body."""
    return self.grow == 'random' and isinstance(self.pattern, select.Unstructured)

  def grow_scores(self, params, grads, step) -> dict:
    """{path: growth scores}: |g| for RigL. Random growth of single weights
    ranks them by `select.random_keys` (leaf i hashes with fold_in(key(step),
    i)), which draws two words a leaf instead of a float per weight; patterns
    draw uniform floats per weight (`criteria.random`), scored per unit."""
    if self.grow == 'gradient':
      return dict(tree_lib.leaves_with_paths(criteria_lib.gradient(params, grads)))
    if isinstance(self.pattern, select.Unstructured):
      key = self.key(step)
      return {path: select.random_keys(p.shape, jax.random.fold_in(key, i))
              for i, (path, p) in enumerate(tree_lib.leaves_with_paths(params))}
    return dict(tree_lib.leaves_with_paths(criteria_lib.random(params, None, self.key(step))))


@dataclasses.dataclass(frozen=True)
class SET(RigL):
  """SET: like RigL but grows at random; uniform allocation and a constant drop rate."""
  allocation: alloc_lib.Allocation = alloc_lib.Allocation('uniform')
  decay: str = 'constant'
  grow: str = 'random'

