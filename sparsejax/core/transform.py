"""The optax transformation that owns the masks.

`sparsify(inner, schedule)` wraps any optax transformation. Its state holds
the masks, so they are checkpointed, sharded and donated with the rest of the
optimizer state. Each update:

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

No hook is needed: pruned weights are zero after every update.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from sparsejax.core import masks as masks_lib
from sparsejax.core import tree as tree_lib

PyTree = Any


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


def sparsify(inner: optax.GradientTransformation, schedule,
             rule: Callable = tree_lib.DEFAULT_RULE
             ) -> optax.GradientTransformationExtraArgs:
  """Wrap `inner` so that it trains a sparse model under `schedule`.

  `rule(path, leaf) -> bool` picks the prunable leaves (default: floating
  leaves of rank >= 2). `update` needs `params`.
  """
  inner = optax.with_extra_args_support(inner)
  # Compiled, so that criteria and selections run as one program; made once,
  # so that repeated inits (eval_shape, then the real one) trace it once.
  schedule_init = jax.jit(schedule.init, static_argnums=1)

  def init_fn(params):
    masks, sched_state = schedule_init(params, rule)
    masks = jax.tree.map(_like_param, params, masks)
    return SparsityState(jnp.zeros([], jnp.int32), masks, sched_state, inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('sparsify needs the params: call tx.update(grads, state, params)')
    step = state.count

    def change_masks(operand):
      masks, sched_state, inner_state = operand
      new_masks, sched_state = schedule.update(masks, params, updates, step, sched_state)
      changed = jax.tree.map(lambda a, b: a != b, masks, new_masks)
      return new_masks, sched_state, reset_moments(inner, inner_state, changed)

    operand = (state.masks, state.schedule_state, state.inner_state)
    masks, sched_state, inner_state = lax.cond(
        schedule.should_update(step), change_masks, lambda op: op, operand)
    masked = jax.tree.map(
        lambda g, m: g if m is None else jnp.where(m, g, jnp.zeros_like(g)), updates, masks)
    new_updates, inner_state = inner.update(masked, inner_state, params, **extra_args)
    if schedule.rewinds:
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
    return new_updates, SparsityState(count, masks, sched_state, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_sparsity_state(x) -> bool:
  return isinstance(x, SparsityState)


def find_states(opt_state) -> list[SparsityState]:
  """Every SparsityState inside a (possibly nested) optimizer state."""
  return [x for x in jax.tree.leaves(opt_state, is_leaf=_is_sparsity_state)
          if _is_sparsity_state(x)]


def get_masks(opt_state) -> PyTree:
  """The masks held by the one `sparsify` transformation in `opt_state`."""
  found = find_states(opt_state)
  if len(found) != 1:
    raise ValueError(f'expected one sparsify state in the optimizer state, found {len(found)}')
  return found[0].masks


def masked_params(params, opt_state) -> PyTree:
  """`params` with the masks of `opt_state` applied (for step 0 or export)."""
  return masks_lib.apply_masks(params, get_masks(opt_state))
