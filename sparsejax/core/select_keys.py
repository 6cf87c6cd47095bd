"""The uint32 keys a selection ranks: float scores in their order, random
orders, and entries forced in or kept out.

`select` compares uint32 keys, never floats: `ordered_keys` maps float scores
to keys whose unsigned order is the float order (NaN lowest, -0.0 and +0.0
tied), with EXCLUDED (0) for entries that may not be selected and FORCED
(2**32 - 1) for those that must be. `random_keys` is a random order without a
random number per entry, `force_argmax` forces a leaf's largest entry, and
`flat_index` numbers the entries in row-major order. All are elementwise or
built from iotas, so a sharded leaf is handled shard by shard.

A module of its own, not part of `select`, because `patterns` needs the keys
too and `select` re-exports `patterns`: both import from here. Every name
here is importable from `select` as well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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


def flat_index(shape: tuple[int, ...]) -> jax.Array:
  """uint32 array of `shape` holding each entry's row-major flat index (built
  from iotas, without reshaping)."""
  idx = jnp.zeros(shape, jnp.uint32)
  for axis, n in enumerate(shape):
    idx = idx * jnp.uint32(n) + lax.broadcasted_iota(jnp.uint32, shape, axis)
  return idx


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
