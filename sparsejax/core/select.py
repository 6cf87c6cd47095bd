"""Exact top-k selection without sorting.

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

The keys (`ordered_keys`, `random_keys`, EXCLUDED, FORCED) are made in
`select_keys` and the sparsity patterns built on this selection (`NM`,
`Structured`, `Block`, `make_pattern`) are in `patterns`; both are
re-exported here.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.core.patterns import (NM, PATTERNS, Block, Structured,  # noqa: F401  (re-exported)
                                     Unstructured, make_pattern)
from sparsejax.core.select_keys import (EXCLUDED, FORCED, flat_index,  # noqa: F401  (re-exported)
                                        force_argmax, ordered_keys, random_keys)


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
