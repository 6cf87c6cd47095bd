"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive
Sparsity by Fine-Tuning").

Weights are ranked by how they move during training, not by their size. The
first-order movement score of a weight is

  S = -sum_t g_t * w_t

over the train steps t (g the loss gradient, w the weight the step starts
from): positive for weights moving away from zero, and, as -g * w is the
first-order change of the loss when w is set to 0, the accumulated estimate
of what removing the weight costs. The paper learns S with a straight-through
estimator, which gives this sum times the score learning rate; here it is the
plain sum (a positive factor changes no ranking; for 'soft', scale
`threshold` instead).

`Movement.accumulate` adds -g * w to the score of every prunable weight on
EVERY step (`sparsify` calls it before the mask update, in both update modes),
in float32, so the schedule state holds one float32 per prunable weight. The
gradient is the one `sparsify` receives: dense (not yet masked), after what is
chained before it (clipping), and under `optax.MultiSteps` the accumulated
gradient, once per k micro-steps.

Pruned weights: `sparsify` keeps them at exactly 0.0, so w_t = 0 there and
their score stops moving (kept, not reset), although their dense gradient is
there. The paper keeps the dense weights behind the mask, so pruned scores
move on; here a pruned weight comes back ('hard') only when the active scores
fall below its frozen score, and restarts from 0.0 with fresh moments.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sparsejax.core import select
from sparsejax.core import tree as tree_lib
from sparsejax.core.schedules import Gradual, ScheduleError

VARIANTS = ('hard', 'soft')


@dataclasses.dataclass(frozen=True)
class Movement(Gradual):
  """Accumulated movement pruning (Sanh et al. 2020), hard or soft.

  On the steps of `Gradual`'s grid (start, start + every, ..., end):

  - variant='hard': each leaf keeps the top (1 - s_t) of its weights by
    accumulated score, s_t following the cubic schedule of `Gradual` towards
    `sparsity` (allocation and pattern as there; 'global' pools the leaves).
    All weights compete, pruned ones included, so the mask may move back.
  - variant='soft': the mask is exactly score > `threshold` (unstructured).
    The paper's soft movement learns scores with an L1 penalty on
    sigmoid(S) and a fixed tau, the penalty setting the sparsity; this
    simplification has no penalty: a fixed `threshold` on the plain
    accumulated score (units of -sum g * w, the loss's units per weight; 0.0
    keeps the weights whose removal, to first order, would have raised the
    loss). The sparsity is an outcome of the run, not a target (a leaf may
    lose all its weights): leave `sparsity` at 0.

  Before `start` the mask is dense; scores accumulate from step 0.
  `criterion` is fixed to 'movement' (the accumulated scores).
  """
  criterion: str = 'movement'
  variant: str = 'hard'
  threshold: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ScheduleError(f'movement variant must be one of {VARIANTS}, got {self.variant!r}')
    if self.variant == 'soft':
      if self.sparsity or self.initial_sparsity:
        raise ScheduleError(
            f'soft movement keeps the weights with score > threshold ({self.threshold}), so '
            f'its sparsity is an outcome of the run; leave sparsity and initial_sparsity at '
            f'0, got {self.sparsity} and {self.initial_sparsity} (or use variant=hard)')
      if not isinstance(self.pattern, select.Unstructured):
        raise ScheduleError('soft movement thresholds single weights: it supports the '
                            f'unstructured pattern only, not {self.pattern.name!r}')

  def check_criterion(self):
    if self.criterion != 'movement':
      raise ScheduleError(f'movement ranks weights by their accumulated movement scores; '
                          f'criterion is not a setting of it (got {self.criterion!r})')

  def check_run(self, total_steps):
    if self.variant == 'hard':
      return super().check_run(total_steps)
    if not self.start < self.end:
      raise ScheduleError(f'movement needs start < end, got start={self.start}, '
                          f'end={self.end} (in steps of this {total_steps}-step run)')
    if self.start >= total_steps:
      raise ScheduleError(f'soft movement start={self.start} is not before the end of the '
                          f'run ({total_steps} steps): it would never prune')

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    masks, _ = super().init(params, rule)
    scores = jax.tree.map(
        lambda p, m: None if m is None else jnp.zeros(p.shape, jnp.float32), params, masks)
    return masks, scores

  def accumulate(self, state, params, grads, step):
    """S <- S - g * w on every prunable weight (float32); see the module doc."""
    del step
    return jax.tree.map(
        lambda p, g, s: None if s is None else
        s - g.astype(jnp.float32) * p.astype(jnp.float32), params, grads, state)

  def update(self, masks, params, grads, step, state):
    del params, grads
    if self.variant == 'soft':
      return jax.tree.map(lambda m, s: s > self.threshold, masks, state), state
    fraction = self.sparsity_at(step) / self.sparsity if self.sparsity else 0.0
    everything = jax.tree.map(jnp.ones_like, masks)
    return self.masks_at(everything, state, fraction=fraction), state
