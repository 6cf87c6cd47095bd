"""Sparse matrix products for inference on CPU: sliced ELL.

A masked kernel W of shape (in, out) (a Linen nn.Dense or NNX nnx.Linear
kernel, y = x @ W) is stored by output column: every column keeps the row
indices and values of its nonzeros, padded to a common width k, so that

    y[b, o] = sum_j values[j, o] * x[b, rows[j, o]]

is one gather of x (whole rows of x.T, so each index fetches all batch
rows) times the values, summed over j as a product with a vector of ones:
static shapes, a few XLA ops. Padding every column to the longest one costs
30-80% more entries on magnitude masks (per-column counts vary), so the
columns are sorted by count and cut into a few groups ("sliced ELL"), each
padded to its own longest column; the cuts minimise padded entries plus a
fixed cost per group (`group_cost`, in entries: each group is a few more
XLA ops). The outputs come back to their order through one small gather
(`inverse`). Padding entries have value 0 and point at distinct rows outside
the column's support, so every (row, column) pair is stored once.

When the mask is made of whole (bh, bw) tiles from `BLOCKS` (e.g.
`select.Block((16, 16))`), the same layout holds tiles instead of scalars:
the gather fetches bh contiguous inputs per index and each tile is a small
dense product (batched `dot_general`).

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

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

BLOCKS = ((16, 16), (8, 8))      # tile shapes tried, largest first
GROUP_COST = 2048                # fixed cost of one more column group, in entries
GATHER_BUDGET = {False: 1.0, True: 16.0}   # rows * fill up to which 'auto' gathers (scalars, tiles)
_PROMISE = lax.GatherScatterMode.PROMISE_IN_BOUNDS


def index_dtype(n: int):
  """The smallest unsigned type holding 0..n-1."""
  for dt in (np.uint8, np.uint16, np.uint32):
    if n <= np.iinfo(dt).max + 1:
      return dt
  return np.uint64


def block_of(mask: np.ndarray) -> tuple[int, int]:
  """The largest tile of `BLOCKS` the 2-D mask is made of, else (1, 1)."""
  mask = np.asarray(mask, bool)
  h, w = mask.shape
  for bh, bw in BLOCKS:
    if h % bh == 0 and w % bw == 0:
      t = mask.reshape(h // bh, bh, w // bw, bw)
      if np.array_equal(t, np.broadcast_to(t[:, :1, :, :1], t.shape)):
        return bh, bw
  return 1, 1


def column_groups(counts: np.ndarray, group_cost: float = GROUP_COST) -> list[tuple[int, int]]:
  """Cut counts sorted in descending order into contiguous groups [a, b)
  minimising sum over groups of ((b - a) * counts[a] + group_cost), a group of
  empty columns costing nothing. Optimal cuts sit where the count changes."""
  c = np.asarray(counts, np.int64)
  n = len(c)
  if n == 0:
    return []
  starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
  cand = np.r_[starts, n]                       # candidate cut points
  best = np.zeros(len(cand))
  back = np.zeros(len(cand), np.int64)
  for j in range(1, len(cand)):
    i = np.arange(j)
    a = cand[i]
    cost = best[i] + (cand[j] - a) * c[a] + np.where(c[a] > 0, group_cost, 0)
    back[j] = int(np.argmin(cost))
    best[j] = cost[back[j]]
  cuts, j = [], len(cand) - 1
  while j > 0:
    cuts.append((int(cand[back[j]]), int(cand[j])))
    j = back[j]
  return cuts[::-1]


@jax.tree_util.register_pytree_node_class
class EllMatrix:
  """A (in, out) matrix in sliced ELL. `rows[g]`, `values[g]`: group g's row
  (or tile-row) indices and values, (k, n) and (k, n) for scalars, (n, k) and
  (n, k, bh, bw) for (bh, bw) tiles; group g covers the output columns (or
  tile columns) order[s:s + n], s the widths of the groups before it;
  `inverse` is the inverse permutation of `order`."""

  def __init__(self, rows, values, order, inverse, shape, block=(1, 1)):
    self.rows, self.values = tuple(rows), tuple(values)
    self.order, self.inverse = order, inverse
    self.shape, self.block = tuple(int(s) for s in shape), tuple(int(b) for b in block)

  def tree_flatten(self):
    return (self.rows, self.values, self.order, self.inverse), (self.shape, self.block)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*children, *aux)

  @property
  def dtype(self):
    return self.values[0].dtype if self.values else jnp.float32

  @property
  def tiled(self) -> bool:
    return self.block != (1, 1)

  @property
  def fill(self) -> float:
    """Stored entries (padding included) over in * out."""
    return self.stored() / max(1, self.shape[0] * self.shape[1])

  @property
  def gather_rows(self) -> int:
    """Input rows up to which `matmul`'s 'auto' gathers rather than densifies.
    Gathering costs about rows * stored, densifying a fixed scatter plus a
    dense product, so the crossover falls as 1 / fill: GATHER_BUDGET rows at
    full fill (rough crossovers measured by benchmarks/bench_inference.py)."""
    return max(1, int(GATHER_BUDGET[self.tiled] / max(self.fill, 1e-9)))

  def widths(self) -> list[int]:
    return [r.shape[1] if not self.tiled else r.shape[0] for r in self.rows]

  def stored(self) -> int:
    """Entries stored, padding included (scalars; tiles count bh * bw)."""
    return int(sum(np.prod(v.shape) for v in self.values))

  def nbytes(self) -> int:
    """Bytes of the stored arrays (values, indices, order; not `inverse`,
    which is derived)."""
    arrays = list(self.rows) + list(self.values) + [self.order]
    return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in arrays))

  def __repr__(self):
    return (f'EllMatrix(shape={self.shape}, block={self.block}, groups='
            f'{[tuple(v.shape[:2]) for v in self.values]})')


def from_dense(w, mask, group_cost: float = GROUP_COST, block=None) -> EllMatrix:
  """`w` under `mask` (2-D, host arrays) as an EllMatrix of numpy arrays;
  tiles when `block_of(mask)` finds them (or `block` says so)."""
  w, mask = np.asarray(w), np.asarray(mask, bool)
  if w.ndim != 2 or w.shape != mask.shape:
    raise ValueError(f'need a 2-D matrix and a mask of its shape, got {w.shape} and {mask.shape}')
  bh, bw = block_of(mask) if block is None else tuple(int(b) for b in block)
  h, wd = w.shape
  if bh < 1 or bw < 1 or h % bh or wd % bw:
    raise ValueError(f'block {(bh, bw)} does not tile a {w.shape} matrix')
  tm = mask.reshape(h // bh, bh, wd // bw, bw)
  if not np.array_equal(tm, np.broadcast_to(tm[:, :1, :, :1], tm.shape)):
    raise ValueError(f'the mask is not made of whole {(bh, bw)} tiles')
  units = tm[:, 0, :, 0]                                         # (in units, out units)
  n_in, n_out = units.shape
  counts = units.sum(0)
  order = np.argsort(-counts, kind='stable')
  idt = index_dtype(n_in)
  tiles = w.reshape(n_in, bh, n_out, bw)
  rows, values = [], []
  for a, b in column_groups(counts[order], group_cost / (bh * bw)):
    k, cols = int(counts[order[a]]), order[a:b]
    r = np.zeros((b - a, k), idt)
    for t, o in enumerate(cols):
      support = np.flatnonzero(units[:, o])
      pad = np.flatnonzero(~units[:, o])[:k - len(support)]    # distinct rows, value 0
      r[t] = np.r_[support, pad]
    if bh * bw == 1:
      v = np.where(np.arange(k) < counts[cols][:, None], w[r, cols[:, None]], 0)
      rows.append(np.ascontiguousarray(r.T))
      values.append(np.ascontiguousarray(v.T.astype(w.dtype)))
    else:
      v = tiles[r, :, cols[:, None], :]                         # (n, k, bh, bw)
      v = np.where((np.arange(k) < counts[cols][:, None])[..., None, None], v, 0)
      rows.append(r)
      values.append(np.ascontiguousarray(v.astype(w.dtype)))
  order = order.astype(index_dtype(n_out))
  return EllMatrix(rows, values, order, np.argsort(order).astype(np.int32), w.shape, (bh, bw))


def to_arrays(m: EllMatrix) -> tuple[dict, dict]:
  """({name: array}, json-able info) to store; `from_arrays` inverts it."""
  arrays = {'order': np.asarray(m.order)}
  for g, (r, v) in enumerate(zip(m.rows, m.values)):
    arrays[f'rows{g}'], arrays[f'values{g}'] = np.asarray(r), np.asarray(v)
  return arrays, {'shape': list(m.shape), 'block': list(m.block), 'groups': len(m.rows),
                  'stored': m.stored()}


def from_arrays(arrays: dict, info: dict, as_jax: bool = True) -> EllMatrix:
  """The EllMatrix of `to_arrays`' output (jax arrays, or numpy without
  `as_jax`); `inverse` is recomputed from `order`."""
  conv = jnp.asarray if as_jax else np.asarray
  order = np.asarray(arrays['order'])
  g = range(info['groups'])
  block = tuple(info['block'])
  units = [int(arrays[f'rows{i}'].shape[0 if block != (1, 1) else 1]) for i in g]
  if sum(units) != len(order) or len(order) * block[1] != info['shape'][1]:
    raise ValueError(f'ELL arrays do not match their info {info}: column groups {units}, '
                     f'order of {len(order)}')
  return EllMatrix([conv(arrays[f'rows{i}']) for i in g], [conv(arrays[f'values{i}']) for i in g],
                   conv(order), conv(np.argsort(order).astype(np.int32)), info['shape'],
                   info['block'])


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
