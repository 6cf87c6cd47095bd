"""The state of `sparsify` and the steps its transformations share.

`sparsify` (transform.py) builds the masks' transformation; the wrappers it
composes for schedules with capabilities (`rewinding.rewinding`,
`ste.straight_through`) build on the same pieces, here so that none of them
imports another: the state type `SparsityState`, packed masks, the update
modes, and the opening and closing of an update. `transform` re-exports the
public names, where they have always been found.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def _like_param(p, m):
  """m placed with p's sharding when p is a concrete array (jit may drop
  params it does not read and then return m on one device)."""
  if m is None or not isinstance(p, jax.Array) or isinstance(p, jax.core.Tracer):
    return m
  return jax.device_put(m, p.sharding)


UPDATE_MODES = ('in_step', 'separate')


def check_update_mode(update: str) -> None:
  if update not in UPDATE_MODES:
    raise ValueError(f"update must be one of {UPDATE_MODES}, got {update!r}")


def masks_may_change(update: str, update_masks) -> bool:
  """Whether this `tx.update` call runs the mask update (and rewinds): always
  with update='in_step', only when `update_masks` is True with 'separate'."""
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


def sparse_init(inner, schedule, rule: Callable, pack: bool) -> Callable:
  """The init function of `sparsify`'s transformations: a SparsityState with
  the schedule's masks placed like the params (packed if `pack`)."""
  # Compiled, so that criteria and selections run as one program; made once,
  # so that repeated inits (eval_shape, then the real one) trace it once.
  schedule_init = jax.jit(schedule.init, static_argnums=1)

  def init_fn(params):
    masks, sched_state = schedule_init(params, rule)
    masks = jax.tree.map(_like_param, params, masks)
    if pack:
      masks = pack_masks(masks)
    return SparsityState(jnp.zeros([], jnp.int32), masks, sched_state, inner.init(params))
  return init_fn


def open_state(schedule, state: SparsityState, params, grads, update: str, update_masks):
  """(step, bool masks, schedule state after this step's `accumulate`,
  whether the masks may change) at the start of an update. The statistics
  (movement scores) run on every step, in both update modes, so the plain
  step of 'separate' runs them too; the default hook adds no ops."""
  if params is None:
    raise ValueError('sparsify needs the params: call tx.update(grads, state, params)')
  step = state.count
  updating = masks_may_change(update, update_masks)
  sched_state = schedule.accumulate(state.schedule_state, params, grads, step)
  return step, unpack_masks(state.masks), sched_state, updating


def close_state(state: SparsityState, masks, sched_state, inner_state, updating: bool,
                pack: bool) -> SparsityState:
  """The next SparsityState. A plain step leaves the masks as they are: with
  packed masks, it keeps the stored bits rather than packing them again."""
  if pack:
    masks = pack_masks(masks) if updating else state.masks
  return SparsityState(optax.safe_increment(state.count), masks, sched_state, inner_state)


def project(updates, params, masks):
  """Updates after which every pruned weight is exactly 0.0 (update = -w)."""
  return jax.tree.map(lambda u, p, m: u if m is None else jnp.where(m, u, -p.astype(u.dtype)),
                      updates, params, masks)
