"""Building blocks of iterative magnitude pruning (Frankle & Carbin 2019).

IMP trains, prunes a fraction of the remaining weights, rewinds the survivors
to earlier values (the initial weights, or the weights at step k as in
Frankle et al. 2020) and trains again. The pure steps are here (prune a
fraction of what remains, rewind under a mask, masks with another mask's
per-layer counts for the controls), and `IMP`, the schedule module that runs
the whole loop inside one training run. The `lottery` program runs it as
separate runs per level with controls and replicates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import masks as masks_lib
from sparsejax.core import protocol
from sparsejax.core import prune as prune_lib
from sparsejax.core import select
from sparsejax.core import tree as tree_lib
from sparsejax.core.schedules import Schedule, ScheduleError

PyTree = Any


def prune_remaining(params: PyTree, masks: PyTree, fraction: float, *,
                    allocation: alloc_lib.Allocation | str = 'uniform',
                    criterion: str | Callable = 'magnitude', pattern=None,
                    grads: PyTree | None = None, key: jax.Array | None = None) -> PyTree:
  """Masks with round(rate * active) more weights pruned in every leaf.

  The rate is `fraction`, changed per leaf by the allocation's overrides and
  scales (Frankle & Carbin prune the output layer at half the rate:
  Allocation(scales={'output': 0.5})). With 'global' allocation one threshold
  prunes `fraction` of all remaining weights. Only active weights compete, so
  no weight is revived.
  """
  if isinstance(allocation, str):
    allocation = alloc_lib.Allocation(allocation)
  allocation.check_prunes_remaining('IMP')
  pattern = pattern or select.Unstructured()
  masks = masks_lib.validate_masks(masks, params)
  shapes = {p: tuple(m.shape) for p, m in tree_lib.leaves_with_paths(masks)}
  prune_lib.check_pattern(pattern, shapes)
  rates = allocation.layer_sparsities(shapes, fraction)
  keep = {p: None if r is None else prune_lib.keep_fraction_of_remaining(r)
          for p, r in rates.items()}
  scores = criteria_lib.get_criterion(criterion)(params, grads, key)
  return prune_lib.select_masks(scores, masks, keep, pattern,
                                prune_lib.keep_fraction_of_remaining(fraction),
                                eligible=masks)


def rewind(params: PyTree, saved: PyTree, masks: PyTree) -> PyTree:
  """`saved` values under the mask, exact zeros where pruned; dense leaves from `saved`."""
  return jax.tree.map(
      lambda p, s, m: s if m is None else jnp.where(m, s, jnp.zeros_like(s)),
      params, saved, masks)


def same_counts(scores: PyTree, reference: PyTree) -> PyTree:
  """Masks keeping, in every leaf, the top-scoring weights in the number that
  `reference` keeps there (ties: lowest index).

  The lottery-ticket controls use it: random scores give a random mask with
  the ticket's per-layer sparsities; magnitudes of the dense trained weights
  give a one-shot pruning to the ticket's per-layer sparsities.
  """
  score_of = dict(tree_lib.leaves_with_paths(scores))
  return tree_lib.map_with_path(
      lambda path, m: select.topk_mask(score_of[path], jnp.sum(m, dtype=jnp.int32)),
      reference)


@dataclasses.dataclass(frozen=True)
class IMP(protocol.Rewinding, Schedule):
  """Iterative magnitude pruning with rewinding inside one training run.

  Every `every` steps, for `rounds` rounds, prune `prune_fraction` of each
  leaf's remaining weights (rates scaled per leaf by the allocation, or one
  global threshold), set all params back to their values at step
  `rewind_step` under the new mask, and reset the inner optimizer's state so
  that its learning-rate schedule starts again (Frankle & Carbin 2019;
  rewinding to step k: Frankle et al. 2020). The step on which this happens
  does not apply its gradient (`sparsify` composes the `rewinding` wrapper,
  as for any `protocol.Rewinding` schedule). The final sparsity is 1 - (1 - p)^rounds for
  uniform rates; the `sparsity` setting is not used. The `lottery` command
  runs the same algorithm as separate runs per level, with controls.
  """
  every: int = 1000
  rounds: int = 5
  prune_fraction: float = 0.2
  rewind_step: int = 0

  def __post_init__(self):
    super().__post_init__()
    if self.sparsity:
      raise ValueError(f'IMP reaches its sparsity through rounds and prune_fraction '
                       f'(here {1 - (1 - self.prune_fraction) ** self.rounds:.4f}); leave '
                       f'sparsity at 0, got {self.sparsity}')
    if not 0.0 < self.prune_fraction < 1.0:
      raise ValueError(f'prune_fraction must be in (0, 1), got {self.prune_fraction}')
    self.allocation.check_prunes_remaining('IMP')
    if self.every < 1 or self.rounds < 0 or not 0 <= self.rewind_step < self.every:
      raise ValueError(f'IMP needs every >= 1, rounds >= 0 and 0 <= rewind_step < every, got '
                       f'every={self.every}, rounds={self.rounds}, '
                       f'rewind_step={self.rewind_step}')

  def check_run(self, total_steps):
    if self.rounds * self.every >= total_steps:
      raise ScheduleError(
          f'imp needs more than rounds * every = {self.rounds} * {self.every} steps to finish '
          f'its rounds and train the last one; the run has {total_steps}')

  @property
  def restart_period(self):
    return self.every

  def lr_step(self, step):
    last_round = self.rounds * self.every
    return step - jnp.minimum(step // self.every * self.every, last_round)

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    masks, _ = super().init(params, rule)
    # The rewind point: the initial params now; replaced at rewind_step if > 0.
    return masks, jax.tree.map(jnp.asarray, params)

  def is_round(self, step):
    return (step > 0) & (step % self.every == 0) & (step <= self.rounds * self.every)

  def should_update(self, step):
    return (step == self.rewind_step) | self.is_round(step)

  def should_rewind(self, step):
    return self.is_round(step)

  def update(self, masks, params, grads, step, state):
    saved = jax.tree.map(lambda s, p: jnp.where(step == self.rewind_step, p, s), state, params)
    new_masks = jax.lax.cond(
        self.is_round(step),
        lambda: prune_remaining(params, masks, self.prune_fraction,
                                allocation=self.allocation, criterion=self.criterion,
                                pattern=self.pattern, grads=grads, key=self.key(step)),
        lambda: masks)
    return new_masks, saved

  def rewind_target(self, masks, state):
    """The params to continue from after a round: the saved ones, masked."""
    return masks_lib.apply_masks(state, masks)
