"""Schedule modules: when and how the mask changes.

Every schedule has the same three methods, so a config swaps one for another:

  init(params, rule) -> (masks, state)     once, outside the train step
  should_update(step) -> bool               traced, inside jit
  update(masks, params, grads, step, state) -> (masks, state)
                                            traced, run under lax.cond

`update` must return masks and state with the same structure, shapes and
dtypes as it received. The `sparsify` transformation does the rest (masking
gradients, zeroing pruned weights, resetting optimizer moments).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import masks as masks_lib
from sparsejax.core import prune as prune_lib
from sparsejax.core import select
from sparsejax.core import tree as tree_lib

PyTree = Any


def shapes_of(masks: PyTree) -> dict[str, tuple[int, ...]]:
  return {p: tuple(m.shape) for p, m in tree_lib.leaves_with_paths(masks)}


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Base: a target sparsity, a criterion, an allocation and a pattern."""
  sparsity: float = 0.0
  criterion: str | Callable = 'magnitude'
  allocation: alloc_lib.Allocation = alloc_lib.Allocation()
  pattern: Any = select.Unstructured()
  seed: int = 0

  def __post_init__(self):
    alloc_lib.check_sparsity(self.sparsity)
    if isinstance(self.allocation, str):
      object.__setattr__(self, 'allocation', alloc_lib.Allocation(self.allocation))
    if isinstance(self.pattern, str):
      object.__setattr__(self, 'pattern', select.make_pattern(self.pattern))
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
class Dense(Schedule):
  """No pruning: the masks stay all-True (the dense baseline)."""


@dataclasses.dataclass(frozen=True)
class OneShot(Schedule):
  """Prune once, to the target sparsity, at step `at_step`."""
  at_step: int = 0

  def should_update(self, step):
    return step == self.at_step

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

  def __post_init__(self):
    super().__post_init__()
    alloc_lib.check_sparsity(self.initial_sparsity, 'initial_sparsity')
    if not 0 <= self.start < self.end or self.every < 1:
      raise ValueError(f'gradual schedule needs 0 <= start < end and every >= 1, got '
                       f'start={self.start}, end={self.end}, every={self.every}')

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
class FixedMask(Schedule):
  """Sparse fine-tuning with a mask that never changes.

  The mask is `masks` when given, else the non-zeros of the params that
  `init` sees (a pruned checkpoint).
  """
  masks: PyTree = None

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    if self.masks is None:
      return masks_lib.masks_from_zeros(params, rule), ()
    return masks_lib.validate_masks(self.masks, params), ()


@dataclasses.dataclass(frozen=True)
class AtInit(Schedule):
  """Prune before the first step, then keep the mask fixed.

  `score_fn(params) -> scores` is any criterion closed over what it needs,
  for example `functools.partial(criteria.snip_scores, loss_fn, batch=batch)`
  (see `at_init`). With iterations > 1 the mask is refined over rounds whose
  density falls exponentially to the target, rescoring the masked params each
  round: SynFlow's iterative pruning (Tanaka et al. 2020, 100 rounds).
  """
  score_fn: Callable | None = None
  iterations: int = 1

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    masks, _ = super().init(params, rule)
    score_fn = self.score_fn or (lambda p: self.scores(p, None, 0))
    n = self.iterations
    if n < 1:
      raise ValueError(f'iterations must be >= 1, got {n}')
    # Round i prunes to density (1 - s)^(i/n); per-leaf targets come from the
    # allocation on the host and enter the loop as arrays, so it compiles once.
    rounds = [1.0 - (1.0 - self.sparsity) ** (i / n) for i in range(1, n + 1)]
    per_round = [self.layer_sparsities(masks, s) for s in rounds]
    per_leaf = {p: None if per_round[0][p] is None
                else jnp.asarray([r[p] for r in per_round], jnp.float32)
                for p in per_round[0]}
    global_s = jnp.asarray(rounds, jnp.float32)

    def one_round(i, m):
      scores = score_fn(masks_lib.apply_masks(params, m))
      targets = {p: None if v is None else v[i] for p, v in per_leaf.items()}
      return self.masks_at(m, scores, targets, global_s[i])

    return jax.lax.fori_loop(0, n, one_round, masks), ()


def at_init(criterion: str, sparsity: float, *, loss_fn=None, batch=None,
            apply_fn=None, input_shape=None, iterations=None, **kwargs) -> AtInit:
  """Pruning at initialisation by name: 'snip', 'grasp', 'synflow', 'random', 'magnitude'."""
  if criterion in ('snip', 'grasp'):
    if loss_fn is None or batch is None:
      raise ValueError(f'{criterion!r} at initialisation needs loss_fn and batch')
    fn = criteria_lib.snip_scores if criterion == 'snip' else criteria_lib.grasp_scores
    score_fn = lambda p: fn(loss_fn, p, batch)
  elif criterion == 'synflow':
    if apply_fn is None or input_shape is None:
      raise ValueError("'synflow' at initialisation needs apply_fn and input_shape")
    score_fn = lambda p: criteria_lib.synflow_scores(apply_fn, p, input_shape)
    iterations = 100 if iterations is None else iterations
    kwargs.setdefault('allocation', alloc_lib.Allocation('global'))
  elif criterion in ('random', 'magnitude'):
    score_fn = None
    kwargs['criterion'] = criterion
  else:
    raise ValueError(f'unknown criterion for pruning at initialisation {criterion!r}; '
                     "choose from ['grasp', 'magnitude', 'random', 'snip', 'synflow']")
  return AtInit(sparsity, score_fn=score_fn, iterations=iterations or 1, **kwargs)
