"""The optax transformation that owns the masks.

`sparsify(inner, schedule)` wraps any optax transformation. Its state holds
the masks, so they are checkpointed, sharded and donated with the rest of the
optimizer state. Each update:

0. runs the schedule's per-step hook `accumulate` (statistics such as
   movement scores, gathered from the unmasked gradients on every step);
1. on steps the schedule picks, computes new masks inside jit (`lax.cond`)
   and zeroes the inner optimizer's moments wherever the mask changed (grown
   or newly pruned weights), found with `optax.tree.map_params`, so it works
   for any inner optimizer;
2. masks the gradients before the inner optimizer;
3. projects the updates so that after `optax.apply_updates` every pruned
   weight is exactly 0.0 (update = -w there), whatever the inner optimizer,
   weight decay or learning-rate injection does;
4. for schedules that rewind (IMP), replaces the update on a round's step by
   a jump back to the saved params and starts the inner state afresh.

Straight-through schedules (STE, SR-STE: `schedule.straight_through`) train
dense shadow weights kept in their state instead of steps 1-3: the inner
optimizer updates the shadow with the unmasked gradients, the mask is
recomputed from it, and params become shadow * mask (see `ste.py`).

With `update='separate'`, steps 1 and 4 are left out of the plain update and
run only when the caller passes `update_masks=True` (a Python bool, so it
selects a second compiled program): a `lax.cond` is not free (XLA reserves
both branches' scratch and threads every operand through it on every step),
so the plain step of any schedule then costs what a fixed-mask step costs
(plus step 0, which runs on every step in both modes).

No hook is needed: pruned weights are zero after every update.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from sparsejax.core import masks as masks_lib
from sparsejax.core import ste as ste_lib
from sparsejax.core import tree as tree_lib

PyTree = Any


@functools.partial(jax.tree_util.register_dataclass, data_fields=['bits'],
                   meta_fields=['shape'])
@dataclasses.dataclass(frozen=True)
class PackedMask:
  """A bool mask stored as bits (`jnp.packbits` of the flat mask, 1/8 byte
  per weight): what `sparsify(..., pack_masks=True)` keeps in its state."""
  bits: jax.Array
  shape: tuple[int, ...]


def pack_masks(masks: PyTree) -> PyTree:
  """Bool masks -> PackedMask leaves (None stays None)."""
  return jax.tree.map(lambda m: None if m is None else
                      PackedMask(jnp.packbits(jnp.ravel(m)), tuple(m.shape)), masks)


def unpack_masks(masks: PyTree) -> PyTree:
  """PackedMask leaves -> bool masks; bool masks pass through."""
  def one(m):
    if not isinstance(m, PackedMask):
      return m
    n = int(np.prod(m.shape))
    return jnp.unpackbits(m.bits, count=n).reshape(m.shape).astype(bool)
  return jax.tree.map(one, masks, is_leaf=lambda x: isinstance(x, PackedMask))


class SparsityState(NamedTuple):
  """State of `sparsify`: step count, masks, schedule state, inner state."""
  count: jax.Array
  masks: PyTree
  schedule_state: PyTree
  inner_state: optax.OptState


def _zero_where(changed):
  def fn(v, c):
    if c is None or not hasattr(v, 'shape') or v.shape != c.shape:
      return v
    return jnp.where(c, jnp.zeros_like(v), v)
  return fn


def _pack(masks):   # (inside `sparsify`, its argument `pack_masks` hides the function)
  return pack_masks(masks)


def _like_param(p, m):
  """m placed with p's sharding when p is a concrete array (jit may drop
  params it does not read and then return m on one device)."""
  if m is None or not isinstance(p, jax.Array) or isinstance(p, jax.core.Tracer):
    return m
  return jax.device_put(m, p.sharding)


def reset_moments(inner: optax.GradientTransformation, inner_state, changed):
  """Zero every params-shaped part of `inner_state` where `changed` is True."""
  return optax.tree.map_params(inner, _zero_where(changed), inner_state, changed,
                               is_leaf=lambda x: x is None)


UPDATE_MODES = ('in_step', 'separate')


def sparsify(inner: optax.GradientTransformation, schedule,
             rule: Callable = tree_lib.DEFAULT_RULE, update: str = 'in_step',
             pack_masks: bool = False) -> optax.GradientTransformationExtraArgs:
  """Wrap `inner` so that it trains a sparse model under `schedule`.

  `rule(path, leaf) -> bool` picks the prunable leaves (default: floating
  leaves of rank >= 2). `tx.update` needs `params`.

  `update` says where the schedule's mask update runs:

  - 'in_step' (default): inside every `tx.update`, under a `lax.cond` on
    `schedule.should_update(count)`. One jitted step does everything, but
    every step pays for the cond (3-5x the scratch memory of a dense step
    and a few percent of time, even on steps that do not update).
  - 'separate': `tx.update(grads, state, params)` never updates the masks
    (no cond: it costs what a fixed-mask step costs, plus the schedule's
    `accumulate`, which both modes run on every step); on the steps listed
    by `schedule.update_steps(n)` (or where `schedule.updates_at(count)`) call
    `tx.update(grads, state, params, update_masks=True)` instead, which does
    what 'in_step' does (mask update, moment reset, IMP's rewind). The flag
    is a Python bool, so jit it as a static argument and two programs are
    compiled, the update one only used on update steps::

      @functools.partial(jax.jit, static_argnames='update_masks', donate_argnums=(0, 1))
      def train_step(params, opt_state, batch, update_masks=False):
        grads = jax.grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params, update_masks=update_masks)
        return optax.apply_updates(params, updates), opt_state

      steps = set(schedule.update_steps(num_steps))
      for i in range(num_steps):
        params, opt_state = train_step(params, opt_state, batch(i),
                                       update_masks=i in steps)

    The flag travels as an extra argument through `optax.chain` and
    `optax.MultiSteps`, so the update sees exactly the gradients 'in_step'
    would (clipped, accumulated) and the results are bitwise the same. The
    schedule counts `tx.update` calls that reach `sparsify`; under
    `MultiSteps(every_k_schedule=k)` count c is micro-step c * k + k - 1.

  `pack_masks=True` stores the masks as bits (`PackedMask`, 1/8 byte per
  weight instead of 1: with Adam, masks plus moments are 1.016x dense Adam's
  state instead of 1.125x), unpacked inside each update; the results are
  bitwise the same. `get_masks` returns them unpacked.
  """
  if update not in UPDATE_MODES:
    raise ValueError(f"update must be one of {UPDATE_MODES}, got {update!r}")
  inner = optax.with_extra_args_support(inner)
  # Compiled, so that criteria and selections run as one program; made once,
  # so that repeated inits (eval_shape, then the real one) trace it once.
  schedule_init = jax.jit(schedule.init, static_argnums=1)

  def init_fn(params):
    masks, sched_state = schedule_init(params, rule)
    masks = jax.tree.map(_like_param, params, masks)
    if pack_masks:
      masks = _pack(masks)
    return SparsityState(jnp.zeros([], jnp.int32), masks, sched_state, inner.init(params))

  def may_update(update_masks) -> bool:
    if update == 'in_step':
      if update_masks is not None:
        raise TypeError("update_masks is for sparsify(..., update='separate'); this one "
                        "updates the masks inside every step (update='in_step')")
      return True
    if update_masks is None:
      return False
    if not isinstance(update_masks, (bool, np.bool_)):
      raise TypeError('update_masks must be a Python bool (a static argument of the jitted '
                      f'step, selecting the program), got {type(update_masks).__name__}')
    return bool(update_masks)

  def update_fn(updates, state, params=None, update_masks=None, **extra_args):
    if params is None:
      raise ValueError('sparsify needs the params: call tx.update(grads, state, params)')
    step = state.count
    masks, sched_state, inner_state = state.masks, state.schedule_state, state.inner_state
    updating = may_update(update_masks)
    stored = masks
    if pack_masks:   # bits in the state; bools inside the update
      masks = unpack_masks(masks)

    def store(new):   # a plain step leaves the masks as they are: keep the stored bits
      if not pack_masks:
        return new
      return _pack(new) if updating else stored

    # Per-step statistics (movement scores): every step, in both modes, so the
    # plain step of 'separate' runs them too; the default hook adds no ops.
    sched_state = schedule.accumulate(sched_state, params, updates, step)
    if schedule.straight_through:
      new_updates, masks, sched_state, inner_state = ste_lib.straight_through_update(
          schedule, inner, updates, masks, sched_state, inner_state, params, step, updating,
          extra_args)
      return new_updates, SparsityState(optax.safe_increment(step), store(masks), sched_state,
                                        inner_state)

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
    if updating and schedule.rewinds:
      # IMP: on a round's last step, go back to the saved params under the new
      # mask and start the inner optimizer afresh (its count too, so a
      # learning-rate schedule restarts); this step's gradient is not applied.
      # A cond, not a select: the other steps do no extra work.
      def jump(operand):
        new_updates, _ = operand
        target = schedule.rewind_target(masks, sched_state)
        return (jax.tree.map(lambda u, t, p: (t - p).astype(u.dtype), new_updates, target,
                             params), inner.init(params))
      new_updates, inner_state = lax.cond(schedule.should_rewind(step), jump, lambda op: op,
                                          (new_updates, inner_state))
    new_updates = jax.tree.map(
        lambda u, p, m: u if m is None else jnp.where(m, u, -p.astype(u.dtype)),
        new_updates, params, masks)
    count = optax.safe_increment(step)
    return new_updates, SparsityState(count, store(masks), sched_state, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
