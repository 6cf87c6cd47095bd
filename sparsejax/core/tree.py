"""Leaf paths and the static rule that decides which leaves are prunable.

Everything here works on any pytree of arrays (Flax Linen params, the state of
a Flax NNX model, plain nested dicts) and runs outside jit or at trace time:
it only looks at paths, shapes and dtypes, never at values.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


def path_str(path) -> str:
  """'layer/0/kernel' for a jax key path; NNX's trailing '/value' is dropped."""
  s = jax.tree_util.keystr(tuple(path), simple=True, separator='/')
  return s[: -len('/value')] if s.endswith('/value') else s


def leaves_with_paths(tree: PyTree, is_leaf: Callable | None = None):
  """[(path string, leaf)] in jax's flattening order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return [(path_str(p), x) for p, x in flat]


def map_with_path(fn: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
  """jax.tree.map whose fn also receives the leaf's path string first."""
  return jax.tree_util.tree_map_with_path(
      lambda p, *xs: fn(path_str(p), *xs), tree, *rest)


def _is_float(x) -> bool:
  return jnp.issubdtype(x.dtype, jnp.floating)


@dataclasses.dataclass(frozen=True)
class PrunableRule:
  """Which leaves carry a mask.

  Default: floating leaves with two or more dimensions (weight matrices,
  conv kernels, embeddings); biases, norm scales and other vectors stay dense.
  `include` and `exclude` are regular expressions searched in the leaf path
  ('encoder/layer_0/attention/query/kernel'); `exclude` wins over `include`,
  and a leaf named by `include` is prunable whatever its rank.
  """
  include: str | None = None
  exclude: str | None = None
  min_ndim: int = 2

  def __post_init__(self):
    for name in ('include', 'exclude'):
      pattern = getattr(self, name)
      if pattern is not None:
        try:
          re.compile(pattern)
        except re.error as e:
          raise ValueError(f'PrunableRule.{name}={pattern!r} is not a valid '
                           f'regular expression: {e}') from None

  def __call__(self, path: str, leaf) -> bool:
    if self.exclude is not None and re.search(self.exclude, path):
      return False
    if self.include is not None and re.search(self.include, path):
      if not _is_float(leaf):
        raise ValueError(
            f'leaf {path!r} matches the prunable pattern {self.include!r} but '
            f'has dtype {leaf.dtype}; only floating-point leaves can be pruned')
      return True
    if self.include is not None:
      return False
    return _is_float(leaf) and len(leaf.shape) >= self.min_ndim


DEFAULT_RULE = PrunableRule()


def prunable_paths(params: PyTree, rule: Callable = DEFAULT_RULE) -> list[str]:
  """Paths of the prunable leaves, in flattening order."""
  return [p for p, x in leaves_with_paths(params) if rule(p, x)]


def prunable_shapes(params: PyTree, rule: Callable = DEFAULT_RULE
                    ) -> dict[str, tuple[int, ...]]:
  """{path: shape} of the prunable leaves (works on ShapeDtypeStructs)."""
  return {p: tuple(x.shape) for p, x in leaves_with_paths(params)
          if rule(p, x)}


def check_same_structure(tree: PyTree, reference: PyTree, what: str = 'tree',
                         reference_what: str = 'the model') -> None:
  """Raises ValueError naming the first leaf path that `tree` lacks, has in
  excess, or holds with another shape than `reference` (None leaves skipped)."""
  got = {p: tuple(getattr(x, 'shape', ())) for p, x in leaves_with_paths(tree)}
  want = {p: tuple(getattr(x, 'shape', ())) for p, x in leaves_with_paths(reference)}
  missing = [p for p in want if p not in got]
  extra = [p for p in got if p not in want]
  if missing:
    raise ValueError(f'{what} has no leaf {missing[0]!r} that {reference_what} has'
                     + (f' (and {len(missing) - 1} more missing)' if len(missing) > 1 else '')
                     + (f'; it has {extra[0]!r} instead' if extra else ''))
  if extra:
    raise ValueError(f'{what} has a leaf {extra[0]!r} that {reference_what} does not have'
                     + (f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''))
  for p, shape in want.items():
    if got[p] != shape:
      raise ValueError(f'{what} leaf {p!r} has shape {got[p]}; {reference_what} needs {shape}')
