"""From scores to masks: the one place where targets, patterns and global
selection meet. Pure and jit-compatible; shapes and targets' structure are
static, target values (sparsities, fractions) may be traced.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import masks as masks_lib
from sparsejax.core import select
from sparsejax.core import tree as tree_lib

PyTree = Any
KeepFn = Callable[[int, jax.Array], jax.Array]   # (units, eligible units) -> kept


def keep_at_sparsity(sparsity) -> KeepFn:
  """Keep n - round(s * n) units of n, at least one."""
  return lambda n, eligible: select.keep_count(n, sparsity)


def keep_fraction_of_remaining(prune_fraction) -> KeepFn:
  """Prune round(f * r) of the r eligible units, keep the rest (at least one)."""
  def fn(n, eligible):
    f = jnp.asarray(prune_fraction, jnp.float32)
    k = eligible - jnp.round(f * eligible.astype(jnp.float32)).astype(jnp.int32)
    return jnp.clip(k, min(1, n), n)
  return fn


def check_pattern(pattern, shapes: Mapping[str, tuple[int, ...]]) -> None:
  for path, shape in shapes.items():
    pattern.check(path, shape)


def select_masks(scores: PyTree, template: PyTree, keep: Mapping[str, KeepFn | None],
                 pattern=select.Unstructured(), global_keep: KeepFn | None = None,
                 eligible: PyTree | None = None) -> PyTree:
  """Masks shaped like `template` that keep the highest-scoring units.

  keep[path] says how many units each leaf keeps; leaves mapped to None form
  one global pool that keeps `global_keep(pool size, eligible in pool)` weights
  under a single threshold, each leaf keeping at least its best weight.
  `eligible` (a mask tree) restricts the choice to its True entries, so that
  pruning never revives a weight. N:M patterns ignore `keep`.
  """
  score_of = dict(tree_lib.leaves_with_paths(scores))
  where_of = dict(tree_lib.leaves_with_paths(eligible)) if eligible is not None else {}
  paths = [p for p, _ in tree_lib.leaves_with_paths(template)]
  result, pool = {}, []
  for path in paths:
    if path not in keep:
      raise ValueError(f'no sparsity target for prunable leaf {path!r}')
    s, w = score_of[path], where_of.get(path)
    if isinstance(pattern, select.NM):
      result[path] = pattern.select(s, w)
    elif keep[path] is None:
      pool.append(path)
    else:
      keys = pattern.unit_keys(s, w)
      n_elig = jnp.sum(keys != select.EXCLUDED, dtype=jnp.int32)
      k = keep[path](keys.size, n_elig)
      result[path] = pattern.expand(select.topk_mask_from_keys(keys, k), s.shape)
  if pool:
    if not isinstance(pattern, select.Unstructured):
      raise ValueError(f'global allocation works with unstructured pruning only, '
                       f'not with the {pattern.name!r} pattern')
    if global_keep is None:
      raise ValueError('leaves in the global pool need a global target')
    keys = [select.ordered_keys(score_of[p], where_of.get(p)) for p in pool]
    n = sum(k.size for k in keys)
    n_elig = sum(jnp.sum(k != select.EXCLUDED, dtype=jnp.int32) for k in keys)
    k_total = jnp.maximum(global_keep(n, n_elig), len(pool))
    keys = [select.force_argmax(k) for k in keys]
    for path, m in zip(pool, select.global_topk_masks(keys, k_total)):
      result[path] = m
  return tree_lib.map_with_path(lambda path, m: result[path], template)


def sparsity_targets(allocation: alloc_lib.Allocation, shapes, sparsity):
  """(per-leaf keep functions, global keep function) for a static sparsity."""
  per_leaf = allocation.layer_sparsities(shapes, sparsity)
  keep = {p: None if s is None else keep_at_sparsity(s) for p, s in per_leaf.items()}
  return keep, keep_at_sparsity(sparsity)


def prune(params: PyTree, sparsity: float, criterion='magnitude', *,
          allocation: alloc_lib.Allocation | str = 'uniform', pattern=None,
          rule: Callable = tree_lib.DEFAULT_RULE, grads: PyTree | None = None,
          key: jax.Array | None = None, masks: PyTree | None = None):
  """One-shot pruning: returns (pruned params, masks).

  `criterion` is a name from `criteria.CRITERIA` or a callable
  (params, grads, key) -> scores. With `masks`, only their active weights
  compete and `sparsity` is measured against the full size.
  """
  if isinstance(allocation, str):
    allocation = alloc_lib.Allocation(allocation)
  pattern = pattern or select.Unstructured()
  template = masks_lib.dense_masks(params, rule)
  shapes = {p: tuple(m.shape) for p, m in tree_lib.leaves_with_paths(template)}
  check_pattern(pattern, shapes)
  keep, global_keep = sparsity_targets(allocation, shapes, sparsity)
  scores = criteria_lib.get_criterion(criterion)(params, grads, key)
  if masks is not None:
    masks = masks_lib.validate_masks(masks, params)
  # one compiled program: op by op, the selection's many small ops cost seconds
  select_fn = jax.jit(lambda s, t, e: select_masks(s, t, keep, pattern, global_keep, eligible=e))
  new = select_fn(scores, template, masks)
  return masks_lib.apply_masks(params, new), new
