"""The optax transformation that owns the masks.

`sparsify(inner, schedule)` wraps any optax transformation. Its state, a
`SparsityState`, holds the masks, so they are checkpointed, sharded and
donated with the rest of the optimizer state. Each update:

0. runs the schedule's per-step hook `accumulate` (statistics such as
   movement scores, gathered from the unmasked gradients on every step);
1. on steps the schedule picks, computes new masks inside jit (`lax.cond`)
   and zeroes the inner optimizer's moments wherever the mask changed (grown
   or newly pruned weights), found with `optax.tree.map_params`, so it works
   for any inner optimizer;
2. masks the gradients before the inner optimizer;
3. projects the updates so that after `optax.apply_updates` every pruned
   weight is exactly 0.0 (update = -w there), whatever the inner optimizer,
   weight decay or learning-rate injection does.

Two capabilities of a schedule (see `protocol`) compose other wrappers,
with the same state:

- rewinding (IMP): `rewinding.rewinding` wraps this transformation and, on a
  round's step, replaces the update by a jump back to the saved params and
  starts the inner state afresh;
- straight-through (STE, SR-STE): `ste.straight_through` trains dense shadow
  weights kept in the schedule state instead of steps 1-3: the inner
  optimizer updates the shadow with the unmasked gradients, the mask is
  recomputed from it, and params become shadow * mask.

Update modes. With `update='in_step'` (default) the mask update runs inside
every `tx.update`, under a `lax.cond` on `schedule.should_update(count)`:
one jitted step does everything, but every step pays for the cond (XLA
reserves both branches' scratch and threads every operand through it: 3-5x
the scratch memory of a dense step and a few percent of time, even on steps
that do not update). With `update='separate'`, `tx.update(grads, state,
params)` never updates the masks (no cond: it costs what a fixed-mask step
costs, plus step 0, which both modes run on every step); on the steps listed
by `schedule.update_steps(n)` (or where `schedule.updates_at(count)`) call
`tx.update(grads, state, params, update_masks=True)` instead, which does
what 'in_step' does (mask update, moment reset, IMP's rewind). The flag is a
Python bool, so jit it as a static argument and two programs are compiled,
the update one only used on update steps::

  @functools.partial(jax.jit, static_argnames='update_masks', donate_argnums=(0, 1))
  def train_step(params, opt_state, batch, update_masks=False):
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params, update_masks=update_masks)
    return optax.apply_updates(params, updates), opt_state

  steps = set(schedule.update_steps(num_steps))
  for i in range(num_steps):
    params, opt_state = train_step(params, opt_state, batch(i), update_masks=i in steps)

The flag travels as an extra argument through `optax.chain` and
`optax.MultiSteps`, so the update sees exactly the gradients 'in_step' would
(clipped, accumulated) and the results are bitwise the same. The schedule
counts `tx.update` calls that reach `sparsify`; under
`MultiSteps(every_k_schedule=k)` count c is micro-step c * k + k - 1.

Packed masks. `pack_masks=True` stores the masks as bits (`PackedMask`, 1/8
byte per weight instead of 1: with Adam, masks plus moments are 1.016x dense
Adam's state instead of 1.125x), unpacked inside each update; the results
are bitwise the same. `get_masks` returns them unpacked.

No hook is needed: pruned weights are zero after every update.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from sparsejax.core import masks as masks_lib
from sparsejax.core import protocol
from sparsejax.core import rewinding as rewinding_lib
from sparsejax.core.sparse_state import (  # noqa: F401  (public here, as always)
    UPDATE_MODES, PackedMask, SparsityState, check_update_mode, close_state, masks_may_change,
    open_state, pack_masks, project, sparse_init, unpack_masks)
from sparsejax.core import ste as ste_lib
from sparsejax.core import tree as tree_lib

PyTree = Any

# The state and mask types live in `sparse_state` (shared with the wrappers);
# they are public here, where they have always been found.
__all__ = ['UPDATE_MODES', 'PackedMask', 'SparsityState', 'find_states', 'get_masks',
           'masked_params', 'pack_masks', 'reset_moments', 'sparsify', 'stored_masks',
           'unpack_masks']


def _zero_where(changed):
  def fn(v, c):
    if c is None or not hasattr(v, 'shape') or v.shape != c.shape:
      return v
    return jnp.where(c, jnp.zeros_like(v), v)
  return fn


def reset_moments(inner: optax.GradientTransformation, inner_state, changed):
  """Zero every params-shaped part of `inner_state` where `changed` is True."""
  return optax.tree.map_params(inner, _zero_where(changed), inner_state, changed,
                               is_leaf=lambda x: x is None)


def sparsify(inner: optax.GradientTransformation, schedule,
             rule: Callable = tree_lib.DEFAULT_RULE, update: str = 'in_step',
             pack_masks: bool = False) -> optax.GradientTransformationExtraArgs:
  """Wrap `inner` so that it trains a sparse model under `schedule`.

  `rule(path, leaf) -> bool` picks the prunable leaves (default: floating
  leaves of rank >= 2). `tx.update` needs `params`. `update` says where the
  schedule's mask update runs: 'in_step' (default: under a `lax.cond` in
  every step) or 'separate' (only in `tx.update(..., update_masks=True)`, a
  static Python bool selecting a second compiled program, on the steps of
  `schedule.update_steps(n)`). `pack_masks=True` keeps the masks as bits.
  Neither changes the results, bitwise; see the module doc for the costs and
  how to drive 'separate'.

  This function does the masks' part (steps 0-3 of the module doc). A
  straight-through schedule (`protocol.StraightThrough`) is trained by
  `ste.straight_through` instead; a rewinding one (`protocol.Rewinding`) has
  this transformation wrapped in `rewinding.rewinding`. The state is a
  `SparsityState` in every case.
  """
  check_update_mode(update)
  inner = optax.with_extra_args_support(inner)
  if protocol.is_straight_through(schedule):
    return ste_lib.straight_through(inner, schedule, rule, update, pack_masks)

  def update_fn(updates, state, params=None, update_masks=None, **extra_args):
    step, masks, sched_state, updating = open_state(schedule, state, params, updates, update,
                                                    update_masks)
    inner_state = state.inner_state

    def change_masks(operand):
      masks, sched_state, inner_state = operand
      new_masks, sched_state = schedule.update(masks, params, updates, step, sched_state)
      changed = jax.tree.map(lambda a, b: a != b, masks, new_masks)
      return new_masks, sched_state, reset_moments(inner, inner_state, changed)

    if updating:
      masks, sched_state, inner_state = lax.cond(
          schedule.should_update(step), change_masks, lambda op: op,
          (masks, sched_state, inner_state))
    masked = jax.tree.map(
        lambda g, m: g if m is None else jnp.where(m, g, jnp.zeros_like(g)), updates, masks)
    new_updates, inner_state = inner.update(masked, inner_state, params, **extra_args)
    return project(new_updates, params, masks), close_state(state, masks, sched_state,
                                                            inner_state, updating, pack_masks)

  tx = optax.GradientTransformationExtraArgs(sparse_init(inner, schedule, rule, pack_masks),
                                             update_fn)
  if protocol.is_rewinding(schedule):
    return rewinding_lib.rewinding(tx, inner, schedule, update)
  return tx


def _is_sparsity_state(x) -> bool:
  return isinstance(x, SparsityState)


def find_states(opt_state) -> list[SparsityState]:
  """Every SparsityState inside a (possibly nested) optimizer state."""
  return [x for x in jax.tree.leaves(opt_state, is_leaf=_is_sparsity_state)
          if _is_sparsity_state(x)]


def stored_masks(opt_state) -> PyTree:
  """The masks of the one `sparsify` transformation in `opt_state` as stored
  (PackedMask leaves stay packed)."""
  found = find_states(opt_state)
  if len(found) != 1:
    raise ValueError(f'expected one sparsify state in the optimizer state, found {len(found)}')
  return found[0].masks


def get_masks(opt_state) -> PyTree:
  """The masks held by the one `sparsify` transformation in `opt_state`."""
  return unpack_masks(stored_masks(opt_state))


def masked_params(params, opt_state) -> PyTree:
  """`params` with the masks of `opt_state` applied (for step 0 or export)."""
  return masks_lib.apply_masks(params, get_masks(opt_state))
