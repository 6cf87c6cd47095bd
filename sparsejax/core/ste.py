"""Straight-through sparse training: STE and SR-STE.

Zhou et al. 2021, "Learning N:M Fine-grained Structured Sparse Neural Networks
From Scratch" (SR-STE), and the straight-through schedule of JaxPruner (Lee
et al. 2023). Dense weights are kept and trained; the forward pass sees them
masked to their top |w| (per leaf by the allocation, or N:M such as 2:4); the
gradient with respect to the masked weights is applied straight through to
the dense weights, at pruned positions too; and the mask is recomputed from
the dense weights' magnitude every `every` steps, so a pruned weight whose
dense value outgrows a kept one comes back. SR-STE adds a decay on the pruned
dense weights, g + sr_decay * (1 - mask) * w, which damps the flipping of the
mask (sr_decay=2e-4 in the paper; 0 is plain STE).

How this keeps the contract of `sparsify` (params exactly 0.0 off the mask,
with any inner optimizer): the dense shadow weights are the schedule state
(a copy of every prunable leaf). The inner optimizer updates the shadow (it
gets the shadow as its params, so weight decay acts on the dense weights and
its moments are the dense weights' moments, never reset); the mask is then
recomputed from the new shadow; and the update that `sparsify` returns moves
params to shadow * mask: the inner update itself where a weight stays kept
(params and shadow are equal there, so they stay bitwise equal), shadow - 0
where it comes back, -params where it is pruned. Other schedules take none
of this path (they lack the `protocol.StraightThrough` capability): their
step is unchanged. `sparsify` hands a straight-through schedule to
`straight_through`, the transformation below, whose state is the same
`SparsityState` as for any other schedule.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import optax
from jax import lax

from sparsejax.core import protocol
from sparsejax.core import select
from sparsejax.core import sparse_state
from sparsejax.core import tree as tree_lib
from sparsejax.core.schedules import Schedule, ScheduleError


@dataclasses.dataclass(frozen=True)
class STE(protocol.StraightThrough, Schedule):
  """Straight-through sparse training (sr_decay=0) or SR-STE (sr_decay > 0).

  The mask is the top |w| of the dense weights at `sparsity` (allocation and
  pattern as usual; an N:M pattern fixes the sparsity) from the first step,
  recomputed after the optimizer step on steps 0, every, 2 * every, ....
  The schedule state holds one dense copy of every prunable leaf.
  """
  every: int = 1
  sr_decay: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.every, int) or self.every < 1:
      raise ScheduleError(f'ste needs every >= 1 (an integer), got every={self.every}')
    if not self.sr_decay >= 0:
      raise ScheduleError(f'ste needs sr_decay >= 0 (0: plain STE), got {self.sr_decay}')
    if not self.sparsity and not isinstance(self.pattern, select.NM):
      raise ScheduleError('ste with sparsity=0 would keep every weight (dense training with a '
                          'shadow copy); set sparsity or an N:M pattern')

  def check_criterion(self):
    if self.criterion != 'magnitude':
      raise ScheduleError(f'ste keeps the dense weights of largest magnitude; criterion is '
                          f'not a setting of it (got {self.criterion!r})')

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    masks, _ = super().init(params, rule)
    shadow = jax.tree.map(lambda p, m: None if m is None else p, params, masks)
    return self.update(masks, params, None, 0, shadow)

  def should_update(self, step):
    return step % self.every == 0

  def update(self, masks, params, grads, step, state):
    """Masks of the top |w| of `params`, all weights competing; `sparsify`
    passes the new dense weights as `params`."""
    del grads, step
    everything = jax.tree.map(jnp.ones_like, masks)
    magnitude = jax.tree.map(lambda w, m: None if m is None else jnp.abs(w), params, masks)
    return self.masks_at(everything, magnitude), state


def _decayed(grads, dense, masks, rate):
  """SR-STE: g + rate * w where the mask prunes w (g where it keeps w)."""
  return jax.tree.map(
      lambda g, w, m: g if m is None else
      jnp.where(m, g, g + (rate * w).astype(g.dtype)), grads, dense, masks)


def straight_through_update(schedule, inner, grads, masks, shadow, inner_state, params, step,
                            updating: bool, extra_args):
  """One step of `sparsify` for a straight-through schedule.

  Returns (updates for params, masks, shadow, inner state); see the module
  doc. `updating` is False in the plain step of update='separate' (mask kept).
  """
  dense = jax.tree.map(lambda p, s: p if s is None else s, params, shadow)
  if schedule.sr_decay:
    grads = _decayed(grads, dense, masks, schedule.sr_decay)
  inner_updates, inner_state = inner.update(grads, inner_state, dense, **extra_args)
  new_dense = optax.apply_updates(dense, inner_updates)
  new_shadow = jax.tree.map(lambda w, s: None if s is None else w, new_dense, shadow)
  new_masks = masks
  if updating:
    def recompute(_):
      return schedule.update(masks, new_dense, grads, step, new_shadow)[0]
    if schedule.every == 1:     # every step: no cond to pay for
      new_masks = recompute(None)
    else:
      new_masks = lax.cond(schedule.should_update(step), recompute, lambda _: masks, None)

  def project(u, p, w, old, new):
    if new is None:
      return u
    u = jnp.where(old, u, (w - p).astype(u.dtype))
    return jnp.where(new, u, -p.astype(u.dtype))
  updates = jax.tree.map(project, inner_updates, params, new_dense, masks, new_masks)
  return updates, new_masks, new_shadow, inner_state


def straight_through(inner: optax.GradientTransformation, schedule,
                     rule=tree_lib.DEFAULT_RULE, update: str = 'in_step',
                     pack_masks: bool = False) -> optax.GradientTransformationExtraArgs:
  """The `sparsify` transformation for a straight-through schedule: the same
  init, state, update modes and packing, with the step of the module doc
  (`straight_through_update`) in place of the masks' steps."""
  sparse_state.check_update_mode(update)
  inner = optax.with_extra_args_support(inner)

  def update_fn(updates, state, params=None, update_masks=None, **extra_args):
    step, masks, shadow, updating = sparse_state.open_state(schedule, state, params, updates,
                                                         update, update_masks)
    new_updates, masks, shadow, inner_state = straight_through_update(
        schedule, inner, updates, masks, shadow, state.inner_state, params, step, updating,
        extra_args)
    return new_updates, sparse_state.close_state(state, masks, shadow, inner_state, updating,
                                              pack_masks)

  return optax.GradientTransformationExtraArgs(
      sparse_state.sparse_init(inner, schedule, rule, pack_masks), update_fn)
