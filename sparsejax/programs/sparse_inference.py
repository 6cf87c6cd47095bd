"""Sparse matrix products for inference on CPU: sliced ELL.

`matmul` multiplies by a masked kernel W (in, out) stored as an `EllMatrix`
(`sliced_ell` has the layout and `from_dense`; its names are re-exported
here): per output column o the row indices and values of its nonzeros, so

    y[b, o] = sum_j values[j, o] * x[b, rows[j, o]]

is one gather of x (whole rows of x.T, so each index fetches all batch
rows) times the values, summed over j as a product with a vector of ones:
static shapes, a few XLA ops per group of columns, and one small gather
(`inverse`) that puts the outputs back in order. With (bh, bw) tiles the
gather fetches bh contiguous inputs per index and each tile is a small
dense product (batched `dot_general`). `todense` scatters the matrix back.

Why and when it pays (benchmarks/bench_inference.py): XLA's CPU gather
loads one scalar at a time, so the gather product costs about rows * stored
entries, while the dense product reads the whole kernel once for all rows.
The gather wins at batch 1 when the dense kernel does not stay in cache
and at high sparsity; it loses once x has a few rows. `matmul` 'auto'
gathers up to `gather_rows` rows, else scatters the kernel into a dense
matrix and multiplies densely (the crossover between these two, not with a
dense model, which neither beats at larger batches).

One run of that benchmark on the loaded 2-core development CPU (forward
time over dense; CSR export in brackets): batch 1, 784-1024-1024-10 MLP
0.50x at 90% (1.19x) and 0.43x at 95% (0.98x); LeNet-300-100 1.59x at 90%
(2.51x) and 1.39x at 95% (1.71x): its 1 MB of weights stays in cache, where
the dense matrix-vector product keeps up with XLA's scalar gathers (about
0.7 ns an entry). Batch 8: 1.7-4.4x (CSR 0.9-2.0x); batch 128, densified:
1.2-1.4x (CSR 2.4-9.9x).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sparsejax.programs.sliced_ell import (  # noqa: F401  (re-exported)
    BLOCKS, GATHER_BUDGET, GROUP_COST, EllMatrix, block_of, column_groups, from_arrays,
    from_dense, index_dtype, to_arrays)

_PROMISE = lax.GatherScatterMode.PROMISE_IN_BOUNDS


def _take_rows(x, idx):
  """x[idx] for a 2-D x (whole rows) and integer idx of any shape."""
  dn = lax.GatherDimensionNumbers(offset_dims=(idx.ndim,), collapsed_slice_dims=(0,),
                                  start_index_map=(0,))
  return lax.gather(x, idx[..., None], dn, (1, x.shape[1]), mode=_PROMISE)


def _group_columns(m: EllMatrix):
  s = 0
  for width in m.widths():
    yield m.order[s:s + width].astype(jnp.int32)
    s += width


def todense(m: EllMatrix) -> jax.Array:
  """The dense (in, out) matrix, by one scatter per group (traceable)."""
  bh, bw = m.block
  h, w = m.shape
  n_in, n_out = h // bh, w // bw
  if not m.tiled:
    flat = jnp.zeros(h * w, m.dtype)
    for r, v, cols in zip(m.rows, m.values, _group_columns(m)):
      if r.size:
        pos = r.astype(jnp.int32) * w + cols[None, :]
        flat = flat.at[pos].set(v, mode='promise_in_bounds', unique_indices=True)
    return flat.reshape(h, w)
  t = jnp.zeros((n_in, n_out, bh, bw), m.dtype)
  for r, v, cols in zip(m.rows, m.values, _group_columns(m)):
    if r.size:
      t = t.at[r.astype(jnp.int32), cols[:, None]].set(v, mode='promise_in_bounds',
                                                      unique_indices=True)
  return t.transpose(0, 2, 1, 3).reshape(h, w)


def _gather_product(x2, m: EllMatrix, dt):
  """(R, in) @ m by gathers. Scalars gather rows of x.T (R contiguous values
  per stored entry), multiply by the values and sum over k as a product with
  ones (XLA's reduce over a fused gather is several times slower here)."""
  rcount, h = x2.shape
  bh, bw = m.block
  parts = []
  if not m.tiled:
    xt = x2.T                                                # (in, R)
    for r, v in zip(m.rows, m.values):
      k, n = r.shape
      if k == 0:
        parts.append(jnp.zeros((n, rcount), dt))
        continue
      g = _take_rows(xt, r.astype(jnp.int32)) * v[:, :, None].astype(dt)   # (k, n, R)
      parts.append((jnp.ones((k,), dt) @ g.reshape(k, n * rcount)).reshape(n, rcount))
    y = jnp.concatenate(parts, axis=0)                       # (out, R), columns in `order`
    return _take_rows(y, m.inverse).T
  n_in = h // bh
  off = jnp.arange(rcount, dtype=jnp.int32) * n_in
  xb = x2.reshape(rcount * n_in, bh)
  for r, v in zip(m.rows, m.values):
    n, k = r.shape
    if k == 0:
      parts.append(jnp.zeros((n, rcount, bw), dt))
      continue
    g = _take_rows(xb, r.astype(jnp.int32)[:, None, :] + off[None, :, None])   # (n, R, k, bh)
    parts.append(jnp.einsum('nrk,nkq->nrq', g.reshape(n, rcount, k * bh),
                            v.reshape(n, k * bh, bw).astype(dt)))
  y = jnp.concatenate(parts, axis=0)                         # (tile columns, R, bw)
  y = _take_rows(y.reshape(y.shape[0], rcount * bw), m.inverse)
  return y.reshape(-1, rcount, bw).transpose(1, 0, 2).reshape(rcount, -1)


def matmul(x, m: EllMatrix, method: str = 'auto') -> jax.Array:
  """x @ m for x of shape (..., in). `method`: 'gather' (the ELL product),
  'densify' (scatter m into a dense matrix, then a dense product) or 'auto'
  (gather for at most `m.gather_rows` input rows, else densify)."""
  x = jnp.asarray(x)
  *lead, h = x.shape
  if h != m.shape[0]:
    raise ValueError(f'x has {h} features, the matrix {m.shape[0]} rows')
  dt = jnp.result_type(x.dtype, m.dtype)
  x2 = x.reshape(-1, h).astype(dt)
  if method == 'auto':
    method = 'gather' if x2.shape[0] <= m.gather_rows else 'densify'
  if method == 'densify':
    y = x2 @ todense(m).astype(dt)
  elif method == 'gather':
    y = _gather_product(x2, m, dt)
  else:
    raise ValueError(f"method must be 'auto', 'gather' or 'densify', got {method!r}")
  return y.reshape(*lead, m.shape[1])
