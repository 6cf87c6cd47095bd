"""Sliced ELL: how `sparse_inference` stores a masked kernel.

A masked kernel W of shape (in, out) (a Linen nn.Dense or NNX nnx.Linear
kernel, y = x @ W) is stored by output column: every column keeps the row
indices and values of its nonzeros, padded to a common width k, so that

    y[b, o] = sum_j values[j, o] * x[b, rows[j, o]]

Padding every column to the longest one costs 30-80% more entries on
magnitude masks (per-column counts vary), so the columns are sorted by count
and cut into a few groups ("sliced ELL"), each padded to its own longest
column; the cuts minimise padded entries plus a fixed cost per group
(`group_cost`, in entries: each group is a few more XLA ops). The outputs
come back to their order through one small gather (`inverse`). Padding
entries have value 0 and point at distinct rows outside the column's
support, so every (row, column) pair is stored once.

When the mask is made of whole (bh, bw) tiles from `BLOCKS` (e.g.
`select.Block((16, 16))`), the same layout holds tiles instead of scalars.

`from_dense` builds an `EllMatrix` on the host (numpy); `to_arrays` and
`from_arrays` turn it into named arrays for a file and back. The products
are in `sparse_inference`, which re-exports every name here.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

BLOCKS = ((16, 16), (8, 8))      # tile shapes tried, largest first
GROUP_COST = 2048                # fixed cost of one more column group, in entries
GATHER_BUDGET = {False: 1.0, True: 16.0}   # rows * fill up to which 'auto' gathers (scalars, tiles)


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
