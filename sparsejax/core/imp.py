"""Building blocks of iterative magnitude pruning (Frankle & Carbin 2019).

IMP trains, prunes a fraction of the remaining weights, rewinds the survivors
to earlier values (the initial weights, or the weights at step k as in
Frankle et al. 2020) and trains again. The loops live in the programs layer;
these are the two pure steps.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import masks as masks_lib
from sparsejax.core import prune as prune_lib
from sparsejax.core import select
from sparsejax.core import tree as tree_lib

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
  if allocation.method in ('er', 'erk'):
    raise ValueError('IMP prunes a fraction of what remains: use uniform (with scales '
                     f'or overrides) or global allocation, not {allocation.method!r}')
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
