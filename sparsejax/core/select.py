"""Exact top-k selection without sorting, and the sparsity patterns built on it.

XLA's sort is slow on CPU (a top-k over a 784x300 kernel by sort or
lax.top_k took 12-55 ms in our runs on the 2-core dev machines, against about
2 ms for the radix select below). Instead we map float scores to uint32 keys whose
unsigned order is the float order, then find the k-th largest key digit by
digit, most significant first (a radix select: four histogram passes, no
sort) and get an exact threshold. Ties at the threshold go to the lowest flat
index (leaf order first for global selection), so every selection keeps
exactly k entries and is deterministic.

Nothing here reshapes or scans a whole leaf: histograms are scatter-adds over
the leaf in its own shape, ties are broken by a second radix select on the
entries' flat indices (built from iotas), and the rest is elementwise or a
reduction. A leaf sharded over a mesh is therefore selected shard by shard,
with only 257-bin histograms and scalars all-reduced, no all-gather of the
leaf (tests/test_select_sharded.py checks the compiled program).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.core.imports import resolve

EXCLUDED = np.uint32(0)           # key of an entry that may not be selected
FORCED = np.uint32(0xFFFFFFFF)    # key of an entry that must be selected


def ordered_keys(scores: jax.Array, where: jax.Array | None = None) -> jax.Array:
  """uint32 keys with the same order as `scores` (NaN counts as -inf).

  Entries where `where` is False get key 0, below every real score.
  """
  x = jnp.asarray(scores, jnp.float32)
  x = jnp.where(jnp.isnan(x), -jnp.inf, x)
  x = jnp.where(x == 0, jnp.float32(0), x)  # -0.0 and +0.0 tie
  bits = lax.bitcast_convert_type(x, jnp.uint32)
  negative = (bits >> 31) == 1
  keys = jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))
  if where is not None:
    keys = jnp.where(where, keys, EXCLUDED)
  return keys


# Histogram width per pass: 16-bit digits (2 passes) pay off from about half a
# million keys (a 1024x1024 kernel: 5.9 against 8.3 ms; 2048x2048: 65 against
# 127 ms on the 2-core dev machine); below, 8-bit digits (4 passes) are as fast
# and their histograms 256x smaller.
WIDE_FROM = 1 << 19


def kth_largest_key(keys: Sequence[jax.Array], k, bits: int = 32) -> jax.Array:
  """Largest t with #(keys >= t) >= k, over all arrays together (k >= 1).

  Radix select: each pass is a histogram of the next digit (8 or 16 bits,
  by the number of keys) of the keys that share the prefix found so far.
  Exact, and 2-3x faster on CPU than a bisection with 32 counting passes
  (1.7-2.6 vs 4.7 ms on a 784x300 kernel). With `bits` < 32 the keys must
  be below 2**bits: only those low bits are searched.
  """
  size = sum(int(np.prod(kk.shape)) for kk in keys)
  width = 16 if size >= WIDE_FROM and bits > 8 else 8
  passes = -(-bits // width)
  top = passes * width

  def one_digit(i, carry):
    t, need, same_prefix = carry
    shift = jnp.asarray(top - width * (i + 1), jnp.uint32)
    digit = [((kk >> shift) & ((1 << width) - 1)).astype(jnp.int32) for kk in keys]
    hist = sum(_histogram(jnp.where(ok, d, 1 << width), width)
               for d, ok in zip(digit, same_prefix))
    at_least = jnp.cumsum(hist[::-1])[::-1]          # at_least[d] = #(digit >= d)
    d = jnp.sum(at_least >= need, dtype=jnp.int32) - 1
    need = need - (at_least[d] - hist[d])           # minus those strictly above d
    t = t | (d.astype(jnp.uint32) << shift)
    same_prefix = [ok & (dg == d) for ok, dg in zip(same_prefix, digit)]
    return t, need, same_prefix

  init = (jnp.uint32(0), jnp.asarray(k, jnp.int32), [jnp.ones(kk.shape, bool) for kk in keys])
  return lax.fori_loop(0, passes, one_digit, init)[0]


def _histogram(bins: jax.Array, width: int) -> jax.Array:
  """Counts of the values 0 .. 2**width - 1 in `bins` (any shape; 2**width is
  not counted): a scatter-add over the array as it is, so a sharded array is
  counted shard by shard (a ravel of a sharded leaf would gather it)."""
  n = 1 << width
  return jnp.zeros((n + 1,), jnp.int32).at[bins].add(1, mode='drop')[:n]


def flat_index(shape: tuple[int, ...]) -> jax.Array:
  """uint32 array of `shape` holding each entry's row-major flat index (built
  from iotas, without reshaping)."""
  idx = jnp.zeros(shape, jnp.uint32)
  for axis, n in enumerate(shape):
    idx = idx * jnp.uint32(n) + lax.broadcasted_iota(jnp.uint32, shape, axis)
  return idx


def _first_n(flags: jax.Array, n) -> jax.Array:
  """flags & (rank among True flags in flat order < n).

  The n lowest flat indices among the flags are the n largest of the keys
  size - index (a radix select over the bits a flat index can use), so no
  scan runs over the leaf.
  """
  n = jnp.asarray(n, jnp.int32)
  size = int(np.prod(flags.shape))
  def take_all():
    return flags
  def take_some():
    keys = jnp.where(flags, jnp.uint32(size) - flat_index(flags.shape), EXCLUDED)  # >= 1
    t = kth_largest_key([keys], jnp.maximum(n, 1), bits=size.bit_length())
    return flags & (keys >= t) & (n > 0)
  return lax.cond(jnp.sum(flags, dtype=jnp.int32) <= n, take_all, take_some)


def topk_mask_from_keys(keys: jax.Array, k) -> jax.Array:
  """Bool mask of exactly k entries with the largest keys."""
  k = jnp.asarray(k, jnp.int32)
  t = kth_largest_key([keys], k)
  above = keys > t
  need = k - jnp.sum(above, dtype=jnp.int32)
  return above | _first_n(keys == t, need)


def topk_mask(scores: jax.Array, k, where: jax.Array | None = None) -> jax.Array:
  """Bool mask keeping exactly k of the highest scores (ties: lowest index).

  Entries where `where` is False are chosen only if fewer than k others exist.
  """
  return topk_mask_from_keys(ordered_keys(scores, where), k)


def global_topk_masks(keys: Sequence[jax.Array], k) -> list[jax.Array]:
  """Exactly k largest keys across several arrays: one threshold for all.

  Ties at the threshold go to earlier arrays first, then to lower indices.
  """
  k = jnp.asarray(k, jnp.int32)
  t = kth_largest_key(keys, k)
  need = k - sum(jnp.sum(kk > t, dtype=jnp.int32) for kk in keys)
  out = []
  for kk in keys:
    ties = kk == t
    n_ties = jnp.sum(ties, dtype=jnp.int32)
    take = jnp.clip(need, 0, n_ties)
    out.append((kk > t) | _first_n(ties, take))
    need = need - take
  return out


def keep_count(n: int, sparsity) -> jax.Array:
  """Weights kept out of n at `sparsity`: n - round(s*n), at least 1, at most n."""
  s = jnp.asarray(sparsity, jnp.float32)
  k = jnp.int32(n) - jnp.round(s * n).astype(jnp.int32)
  return jnp.clip(k, min(1, n), n)


def force_argmax(keys: jax.Array) -> jax.Array:
  """Keys with the largest entry (first on ties) raised to FORCED."""
  idx = flat_index(keys.shape)
  first = jnp.min(jnp.where(keys == jnp.max(keys), idx, jnp.uint32(0xFFFFFFFF)))
  return jnp.where(idx == first, FORCED, keys)


def _mix32(x: jax.Array) -> jax.Array:
  """The 32-bit finalizer of MurmurHash3 (Appleby): a bijection on uint32
  whose output bits each depend on every input bit."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def random_keys(shape: tuple[int, ...], key: jax.Array) -> jax.Array:
  """A uniformly random order of a leaf's entries, as uint32 keys >= 1.

  Each entry's key hashes its flat index with two random words drawn from
  `key` (two rounds of a bijective mixer), so distinct entries get distinct
  keys (a top-k over them has no ties to break, unless some entry hashes to
  0, about n in 2**32 for n entries, and is raised to 1) and only two words
  are drawn, not a number per entry: on CPU a threefry float per weight was
  a quarter of SET's update (5.8 of 22.8 ms on the MLP 784-1024-1024-10,
  benchmarks/README.md). Built from iotas like `flat_index`, so a sharded
  leaf is hashed shard by shard.
  """
  words = jax.random.bits(key, (2,), jnp.uint32)
  h = _mix32(flat_index(shape) * jnp.uint32(0x9E3779B9) + words[0])
  h = _mix32(h ^ words[1])
  return jnp.maximum(h, jnp.uint32(1))


# --- patterns -----------------------------------------------------------------
# A pattern turns element scores into scores of the units it keeps or prunes
# whole (`unit_keys`) and a kept-units mask back into an element mask
# (`expand`). N:M is local to each group and selects directly.

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
