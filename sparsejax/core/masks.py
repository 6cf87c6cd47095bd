"""Masks: pytrees of bool arrays shaped like the params.

A mask holds a bool array at every prunable leaf and `None` at every leaf that
stays dense, so `jax.tree.map(f, params, masks)` hands `f` either an array or
`None`. All functions are pure and jit-compatible unless they say otherwise.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sparsejax.core import tree as tree_lib

PyTree = Any


def _is_none(x) -> bool:
  return x is None


def dense_masks(params: PyTree, rule: Callable = tree_lib.DEFAULT_RULE):
  """All-True masks on the prunable leaves (keeps each leaf's sharding)."""
  return tree_lib.map_with_path(
      lambda path, p: jnp.ones_like(p, dtype=bool) if rule(path, p) else None,
      params)


def masks_from_zeros(params: PyTree,
                     rule: Callable = tree_lib.DEFAULT_RULE) -> PyTree:
  """The mask of a pruned model: True where a prunable weight is non-zero."""
  return tree_lib.map_with_path(
      lambda path, p: (p != 0) if rule(path, p) else None, params)


def validate_masks(masks: PyTree, params: PyTree) -> PyTree:
  """Checks that `masks` fits `params`; returns it with bool leaves.

  Raises ValueError naming the first leaf path whose structure, shape or dtype
  does not fit. Leaves of `masks` may be None (dense) or bool arrays.
  """
  mask_paths = dict(tree_lib.leaves_with_paths(masks, is_leaf=_is_none))
  param_paths = dict(tree_lib.leaves_with_paths(params))
  for path in param_paths:
    if path not in mask_paths:
      raise ValueError(f'mask has no entry for the parameter leaf {path!r} '
                       '(use None for a leaf that stays dense)')
  for path in mask_paths:
    if path not in param_paths:
      raise ValueError(f'mask has a leaf {path!r} that the params do not have')
  try:
    jax.tree.map(lambda p, m: None, params, masks)
  except (ValueError, TypeError) as e:
    raise ValueError(f'mask tree structure differs from the params: {e}') from None
  for path, m in mask_paths.items():
    if m is None:
      continue
    p = param_paths[path]
    if tuple(m.shape) != tuple(p.shape):
      raise ValueError(f'mask for leaf {path!r} has shape {tuple(m.shape)}, '
                       f'the parameter has shape {tuple(p.shape)}')
    if m.dtype != jnp.bool_ and not jnp.issubdtype(m.dtype, jnp.integer):
      raise ValueError(f'mask for leaf {path!r} has dtype {m.dtype}; '
                       'expected bool')
  return jax.tree.map(lambda p, m: None if m is None else m.astype(bool),
                      params, masks)


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
  """Params with every masked-out weight set to exactly 0."""
  return jax.tree.map(
      lambda p, m: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
      params, masks)


def _mask_leaves(masks: PyTree) -> list[tuple[str, jax.Array]]:
  return tree_lib.leaves_with_paths(masks)


def count_active(masks: PyTree) -> dict[str, jax.Array]:
  """{path: number of True entries} for every masked leaf."""
  return {p: jnp.sum(m, dtype=jnp.int32) for p, m in _mask_leaves(masks)}


def count_total(masks: PyTree) -> dict[str, int]:
  """{path: number of entries} for every masked leaf (static)."""
  return {p: int(m.size) for p, m in _mask_leaves(masks)}


def layer_density(masks: PyTree) -> dict[str, jax.Array]:
  """{path: fraction of weights kept} for every masked leaf."""
  return {p: jnp.mean(m, dtype=jnp.float32) for p, m in _mask_leaves(masks)}


def layer_sparsity(masks: PyTree) -> dict[str, jax.Array]:
  """{path: fraction of weights pruned} for every masked leaf."""
  return {p: 1.0 - d for p, d in layer_density(masks).items()}


def total_active(masks: PyTree) -> jax.Array:
  """Active weights over all masked leaves."""
  counts = list(count_active(masks).values())
  return sum(counts, jnp.zeros((), jnp.int32))


def overall_density(masks: PyTree) -> jax.Array:
  """Fraction of masked-leaf weights kept (dense leaves not counted)."""
  total = sum(count_total(masks).values())
  if total == 0:
    return jnp.ones((), jnp.float32)
  return total_active(masks).astype(jnp.float32) / total


def overall_sparsity(masks: PyTree) -> jax.Array:
  return 1.0 - overall_density(masks)


def overlap(a: PyTree, b: PyTree) -> dict[str, dict[str, jax.Array]]:
  """Agreement between two masks of the same params, per leaf and overall.

  For each leaf and for 'total': `intersection` (weights active in both),
  `iou` (intersection over union) and `recall` (share of `a`'s active weights
  that `b` also keeps), as used to compare lottery tickets across runs.
  """
  la, lb = dict(_mask_leaves(a)), dict(_mask_leaves(b))
  if la.keys() != lb.keys():
    raise ValueError(f'masks cover different leaves: {sorted(la.keys() ^ lb.keys())}')
  out = {}
  tot = {'intersection': 0, 'union': 0, 'active_a': 0}
  for path, ma in la.items():
    mb = lb[path]
    if ma.shape != mb.shape:
      raise ValueError(f'masks for leaf {path!r} have shapes {ma.shape} and {mb.shape}')
    inter = jnp.sum(ma & mb, dtype=jnp.int32)
    union = jnp.sum(ma | mb, dtype=jnp.int32)
    act = jnp.sum(ma, dtype=jnp.int32)
    out[path] = _overlap_stats(inter, union, act)
    tot = {'intersection': tot['intersection'] + inter,
           'union': tot['union'] + union, 'active_a': tot['active_a'] + act}
  out['total'] = _overlap_stats(tot['intersection'], tot['union'], tot['active_a'])
  return out


def _overlap_stats(inter, union, act):
  inter = jnp.asarray(inter)
  return {'intersection': inter,
          'iou': inter / jnp.maximum(union, 1),
          'recall': inter / jnp.maximum(act, 1)}


def summary(masks: PyTree) -> list[dict[str, Any]]:
  """Host-side per-leaf table rows: path, shape, active, total, density."""
  rows = []
  for path, m in _mask_leaves(masks):
    active = int(jnp.sum(m))
    rows.append({'path': path, 'shape': tuple(m.shape), 'active': active,
                 'total': int(m.size), 'density': active / max(int(m.size), 1)})
  return rows


def mask_dynamics(previous: PyTree, new: PyTree, initial: PyTree) -> dict[str, jax.Array]:
  """How a mask update moved the connectivity, summed over all masked leaves.

  The drop/grow metrics of dynamic sparse training (SET, RigL): 'dropped'
  (True in `previous`, False in `new`), 'grown' (False -> True) and 'active'
  (True in `new`) as int32 counts; 'overlap_previous' and 'overlap_initial',
  the share of `new`'s active weights also active in `previous` / `initial`,
  as float32 (the exploration of new weights of Liu et al. 2021, "In-time
  over-parameterization"). The three masks must have the same structure,
  None at the same (dense) leaves.
  """
  def counts(p, n, i):
    p, n, i = p.astype(bool), n.astype(bool), i.astype(bool)
    c = lambda x: jnp.sum(x, dtype=jnp.int32)
    return jnp.stack([c(p & ~n), c(~p & n), c(n), c(n & p), c(n & i)])

  per_leaf = jax.tree.leaves(jax.tree.map(counts, previous, new, initial))
  dropped, grown, active, with_prev, with_init = (
      sum(per_leaf, jnp.zeros((5,), jnp.int32)) if per_leaf else jnp.zeros((5,), jnp.int32))
  denom = jnp.maximum(active, 1).astype(jnp.float32)
  return {'dropped': dropped, 'grown': grown, 'active': active,
          'overlap_previous': with_prev.astype(jnp.float32) / denom,
          'overlap_initial': with_init.astype(jnp.float32) / denom}
