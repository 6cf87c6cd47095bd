"""Sparsity patterns: the units a selection keeps or prunes whole.

A pattern turns element scores into scores of the units it keeps or prunes
whole (`unit_keys`) and a kept-units mask back into an element mask
(`expand`): `Unstructured` (single weights), `Structured` (slices along an
axis: neurons, channels, inputs) and `Block` (tiles of the last two axes),
selected by `select`'s top-k. `NM` is local to each group of m weights and
selects directly. `make_pattern` builds one by name or import path. `select`
re-exports every name here (`select.NM`, `sparsejax.core.select:NM`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from sparsejax.core.imports import resolve
from sparsejax.core.select_keys import ordered_keys


def _axis(axis: int, ndim: int, path: str) -> int:
  if not -ndim <= axis < ndim:
    raise ValueError(f'leaf {path!r} has {ndim} dimensions; axis {axis} is out of range')
  return axis % ndim


def _reduce(x, axes, how):
  if how == 'sum':
    return jnp.sum(x, axis=axes)
  if how == 'mean':
    return jnp.mean(x, axis=axes)
  if how == 'l2':
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes))
  if how == 'max':
    return jnp.max(x, axis=axes)
  raise ValueError(f"unknown reduction {how!r}; use 'sum', 'mean', 'l2' or 'max'")


@dataclasses.dataclass(frozen=True)
class Unstructured:
  """Any individual weight may be pruned."""
  name = 'unstructured'

  def check(self, path: str, shape: tuple[int, ...]) -> None:
    del path, shape

  def unit_keys(self, scores, where=None):
    return ordered_keys(scores, where)

  def expand(self, keep, shape):
    return keep.reshape(shape)


@dataclasses.dataclass(frozen=True)
class Structured:
  """Whole slices along `axis` (default -1: output neurons / channels).

  A slice's score is the `reduce` ('sum', 'mean', 'l2', 'max') of its
  entries' scores; the top slices are kept, all weights of the others pruned.
  Use axis=-2 to prune inputs (rows of a Flax kernel) instead.
  """
  axis: int = -1
  reduce: str = 'sum'
  name = 'structured'

  def __post_init__(self):
    _reduce(jnp.zeros((1,)), (0,), self.reduce)

  def check(self, path: str, shape: tuple[int, ...]) -> None:
    _axis(self.axis, len(shape), path)

  def unit_keys(self, scores, where=None):
    ax = self.axis % scores.ndim
    others = tuple(i for i in range(scores.ndim) if i != ax)
    s = jnp.asarray(scores, jnp.float32)
    if where is not None:
      s = jnp.where(where, s, 0)
    unit_where = None if where is None else jnp.any(where, axis=others)
    return ordered_keys(_reduce(s, others, self.reduce), unit_where)

  def expand(self, keep, shape):
    ax = self.axis % len(shape)
    b = [1] * len(shape)
    b[ax] = -1
    return jnp.broadcast_to(keep.reshape(b), shape)


@dataclasses.dataclass(frozen=True)
class Block:
  """Blocks of `block` (rows, cols) over the last two axes, kept or pruned whole."""
  block: tuple[int, int] = (4, 4)
  reduce: str = 'sum'
  name = 'block'

  def __post_init__(self):
    object.__setattr__(self, 'block', tuple(int(b) for b in self.block))
    if len(self.block) != 2 or min(self.block) < 1:
      raise ValueError(f'block must be two positive sizes, got {self.block}')
    _reduce(jnp.zeros((1,)), (0,), self.reduce)

  def check(self, path: str, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
      raise ValueError(f'block pattern needs 2 or more dimensions; leaf {path!r} has shape {shape}')
    bh, bw = self.block
    if shape[-2] % bh or shape[-1] % bw:
      raise ValueError(f'block {self.block} does not tile the last two axes of '
                       f'leaf {path!r} {tuple(shape)}')

  def _blocked(self, x):
    *lead, h, w = x.shape
    bh, bw = self.block
    return x.reshape(*lead, h // bh, bh, w // bw, bw)

  def unit_keys(self, scores, where=None):
    s = jnp.asarray(scores, jnp.float32)
    if where is not None:
      s = jnp.where(where, s, 0)
    unit_where = None if where is None else jnp.any(self._blocked(where), axis=(-3, -1))
    return ordered_keys(_reduce(self._blocked(s), (-3, -1), self.reduce), unit_where)

  def expand(self, keep, shape):
    *lead, h, w = shape
    bh, bw = self.block
    full = jnp.broadcast_to(keep[..., :, None, :, None], (*lead, h // bh, bh, w // bw, bw))
    return full.reshape(shape)


@dataclasses.dataclass(frozen=True)
class NM:
  """N:M sparsity: keep the n highest of every m consecutive weights along `axis`.

  Default axis -2 is the input (reduction) axis of a Flax Dense or Conv kernel,
  the layout that sparse tensor cores use for 2:4. The pattern fixes the
  sparsity at 1 - n/m; a schedule whose sparsity is set to another value is an error.
  """
  n: int = 2
  m: int = 4
  axis: int = -2
  name = 'nm'

  def __post_init__(self):
    if not (isinstance(self.n, int) and isinstance(self.m, int) and 0 < self.n < self.m):
      raise ValueError(f'N:M needs integers 0 < N < M, got N={self.n}, M={self.m}')

  @property
  def sparsity(self) -> float:
    return 1.0 - self.n / self.m

  def check(self, path: str, shape: tuple[int, ...]) -> None:
    ax = _axis(self.axis, len(shape), path)
    if shape[ax] % self.m:
      raise ValueError(f'N:M pattern {self.n}:{self.m}: M={self.m} does not divide axis '
                       f'{self.axis} (size {shape[ax]}) of leaf {path!r} {tuple(shape)}')

  def _grouped(self, x):
    """x with the pattern axis last, split into (..., groups, m)."""
    moved = jnp.moveaxis(x, self.axis % x.ndim, -1)
    return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // self.m, self.m))

  def group_counts(self, mask):
    """True entries per group of m, shaped (..., groups) with the axis last."""
    return jnp.sum(self._grouped(mask), axis=-1, dtype=jnp.int32)

  def select(self, scores, where=None, counts=None):
    """Mask keeping the top n of each group of m (ties: lower index).

    `counts` (int, shaped like `group_counts`) keeps a different number per
    group instead of n; entries where `where` is False come last.
    """
    g = self._grouped(ordered_keys(scores, where))
    a, b = g[..., :, None], g[..., None, :]       # a: entry i, b: entry j
    j_before_i = jnp.arange(self.m)[None, :] < jnp.arange(self.m)[:, None]
    j_before_i = j_before_i.reshape((1,) * (g.ndim - 1) + (self.m, self.m))
    rank = jnp.sum((b > a) | ((b == a) & j_before_i), axis=-1)
    keep = rank < (self.n if counts is None else counts[..., None])
    moved = keep.reshape(keep.shape[:-2] + (keep.shape[-2] * self.m,))
    return jnp.moveaxis(moved, -1, self.axis % moved.ndim)


PATTERNS = {'unstructured': Unstructured, 'nm': NM, 'structured': Structured,
            'block': Block}


def make_pattern(name: str, **kwargs):
  """A pattern by name: 'unstructured', 'nm', 'structured' (rows/channels), 'block',
  or by import path 'pkg.module:Class' (with check, unit_keys and expand, or select)."""
  return resolve(name, PATTERNS, 'sparsity pattern')(**kwargs)
