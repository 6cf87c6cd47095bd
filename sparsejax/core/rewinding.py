"""IMP's rewind as an optax wrapper around `sparsify`'s transformation.

Iterative magnitude pruning (Frankle & Carbin 2019; rewinding to step k:
Frankle et al. 2020) ends every round by going back: on a step where
`schedule.should_rewind(count)`, the params jump to
`schedule.rewind_target(masks, schedule_state)` under the new mask, and the
inner optimizer starts afresh (its count too, so a learning-rate schedule
restarts); that step's gradient is not applied.

This is a wrapper in the manner of optax's `masked` or
`conditionally_transform`: it takes the transformation `sparsify` built for
the masks and returns one with the same `SparsityState` (so the optimizer
state, and every checkpoint, has the layout of any other schedule). It runs
after the wrapped update, which has already updated the masks and the
schedule state, and only where the masks may change (every step with
update='in_step'; the update program of 'separate').
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax import lax

from sparsejax.core import protocol
from sparsejax.core import sparse_state

PyTree = Any


def rewinding(tx: optax.GradientTransformationExtraArgs, inner: optax.GradientTransformation,
              schedule, update: str = 'in_step') -> optax.GradientTransformationExtraArgs:
  """`tx` (whose state is a SparsityState) with IMP's rewind added.

  `inner` is the optimizer inside `tx`, re-initialised on a rewind;
  `schedule` has the `protocol.Rewinding` capability (`should_rewind`,
  `rewind_target`); `update` is `tx`'s update mode.
  """
  sparse_state.check_update_mode(update)

  def update_fn(updates, state, params=None, update_masks=None, **extra_args):
    new_updates, new_state = tx.update(updates, state, params, update_masks=update_masks,
                                       **extra_args)
    if not sparse_state.masks_may_change(update, update_masks):
      return new_updates, new_state

    # A cond, not a select: the other steps do no extra work.
    def jump(operand):
      new_updates, _ = operand
      masks = sparse_state.unpack_masks(new_state.masks)
      target = schedule.rewind_target(masks, new_state.schedule_state)
      moved = jax.tree.map(lambda u, t, p: (t - p).astype(u.dtype), new_updates, target,
                           params)
      return sparse_state.project(moved, params, masks), inner.init(params)

    new_updates, inner_state = lax.cond(protocol.should_rewind(schedule, state.count), jump,
                                        lambda op: op, (new_updates, new_state.inner_state))
    return new_updates, new_state._replace(inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)
