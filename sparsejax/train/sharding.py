"""The device mesh and the shardings of params, optimizer state and batches.

One mesh with a 'data' and a 'model' axis. Batches split over 'data'. Params
follow rules over leaf paths (first matching regex wins; replicated when none
matches); with `fsdp`, each param is also split over 'data' along its
largest dimension that divides (ZeRO-3 / FSDP: Rajbhandari et al. 2020),
and jit gathers it where a computation needs it whole. Every other state
leaf that has a param's shape and ends with that param's path (masks, Adam
moments, saved rewind weights) takes that param's sharding. Packed masks
(`train.pack_masks`: the bits of the flat mask, 1-D) are split like their
param's leading dimension where whole bytes allow it, else replicated
(`packed_sharding`). Everything else (counters, scalars, RNG) is
replicated, and so is the compact optimizer state
(`train.optimizer_state='compact'`, sparsejax.core.compact): its vectors of
kept entries have no blocks that follow a param's shards (how many entries
a shard keeps varies), and their lengths rarely divide the mesh; split
anyway (tried where they divide), they gave the same results but made every
step all-gather the kept indices to gather and scatter. The same code runs
on one device and on many, on CPU, GPU or TPU.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sparsejax.core import tree as tree_lib

PyTree = Any
AXES = ('data', 'model')


def make_mesh(shape: Sequence[int] = (-1, 1), devices=None) -> Mesh:
  """A ('data', 'model') mesh; -1 takes the devices left over."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f'mesh shape {tuple(shape)} may have at most one -1')
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f'mesh shape {tuple(shape)} does not fit {len(devices)} devices')
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f'mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, '
                     f'{len(devices)} are present')
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(mesh: Mesh, params: PyTree, rules=(), fsdp: bool = False) -> PyTree:
  """NamedSharding per param leaf from (regex, spec) rules over leaf paths;
  with `fsdp`, also split over 'data' (see the module doc)."""
  compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]

  def one(path, leaf):
    spec = P()
    for pattern, rule in compiled:
      if pattern.search(path):
        spec = _checked_spec(mesh, path, leaf.shape, rule)
        break
    if fsdp:
      spec = _fsdp_spec(mesh, tuple(leaf.shape), spec)
    return NamedSharding(mesh, spec)
  return tree_lib.map_with_path(one, params)


def _fsdp_spec(mesh: Mesh, shape: tuple[int, ...], spec: P) -> P:
  """`spec` with 'data' on the largest free dimension that 'data' divides
  (unchanged when none does, or 'data' is used already)."""
  n = mesh.shape['data']
  axes = list(spec) + [None] * (len(shape) - len(spec))
  if n == 1 or 'data' in axes:
    return spec
  free = [i for i, (d, a) in enumerate(zip(shape, axes)) if a is None and d % n == 0]
  if not free:
    return spec
  axes[max(free, key=lambda i: (shape[i], -i))] = 'data'
  return P(*axes)


def _checked_spec(mesh, path, shape, spec) -> P:
  if len(spec) > len(shape):
    raise ValueError(f'sharding rule {spec} has more axes than leaf {path!r} {tuple(shape)}')
  for dim, axis in zip(shape, spec):
    if axis is None:
      continue
    if axis not in mesh.shape:
      raise ValueError(f'sharding rule for leaf {path!r} names mesh axis {axis!r}; '
                       f'the mesh has {list(mesh.shape)}')
    if dim % mesh.shape[axis]:
      raise ValueError(f'leaf {path!r} {tuple(shape)}: dimension {dim} does not split '
                       f'over mesh axis {axis!r} of size {mesh.shape[axis]}')
  return P(*spec)


def state_shardings(mesh: Mesh, state: PyTree, params: PyTree, param_sh: PyTree) -> PyTree:
  """Shardings for any state tree: a leaf takes the sharding of the param whose
  path it ends with and whose shape it has; a packed mask (`<param path>/bits`,
  see `packed_sharding`) follows its param where it can; other leaves are
  replicated."""
  by_path = {}
  for (path, p), (_, s) in zip(tree_lib.leaves_with_paths(params),
                               tree_lib.leaves_with_paths(param_sh)):
    by_path[path] = (tuple(p.shape), s)

  def one(path, leaf):
    shape = tuple(getattr(leaf, 'shape', ()))
    best = None
    for ppath, (pshape, s) in by_path.items():
      if pshape == shape and (path == ppath or path.endswith('/' + ppath)):
        if best is None or len(ppath) > len(best[0]):
          best = (ppath, s)
    if best:
      return best[1]
    if path.endswith('/bits') and getattr(leaf, 'dtype', None) == np.uint8:   # PackedMask
      mpath = path[:-len('/bits')]
      for ppath, (pshape, s) in by_path.items():
        if (shape == (-(-int(np.prod(pshape)) // 8),)
            and (mpath == ppath or mpath.endswith('/' + ppath))):
          if best is None or len(ppath) > len(best[0]):
            best = (ppath, packed_sharding(mesh, pshape, s))
    return best[1] if best else replicated(mesh)
  return tree_lib.map_with_path(one, state)


def packed_sharding(mesh: Mesh, shape: tuple[int, ...], param_sh: NamedSharding
                    ) -> NamedSharding:
  """The sharding of a packed mask (`jnp.packbits` of the row-major flat mask
  of a param of `shape` sharded by `param_sh`), aligned with its param.

  A contiguous chunk of the flat mask is a block of rows of the param's
  leading dimension (its first one longer than 1), so the bits are split
  over the mesh axes that split that dimension (1/N of them per device), and
  each device unpacks its param shard's rows without communication (all
  columns: where another axis, e.g. 'model', splits the columns, it slices
  its own locally; the mask update then gathers each new mask over that
  axis only, to pack whole rows). That needs each device's chunk to be
  whole bytes: size % (8 * N) == 0.

  Fallback, replicated bits: when that does not hold, and when the leading
  dimension is not split (FSDP split another one, e.g. GPT-2's (768, 3072)
  MLP kernels along 3072, conv kernels (kh, kw, in, out) along a channel).
  A split of the bits that does not follow the param would move bits
  between devices on every step to unpack them; the mask update gathers
  the whole new mask of such a leaf to pack it, as before.
  """
  size = int(np.prod(shape))
  spec = list(param_sh.spec) + [None] * (len(shape) - len(param_sh.spec))
  lead = next((i for i, d in enumerate(shape) if d > 1), None)
  if lead is None or spec[lead] is None:
    return replicated(mesh)
  axes = spec[lead] if isinstance(spec[lead], tuple) else (spec[lead],)
  n = int(np.prod([mesh.shape[a] for a in axes]))
  if n == 1 or shape[lead] % n or size % (8 * n):
    return replicated(mesh)
  return NamedSharding(mesh, P(spec[lead]))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, P('data', *([None] * (ndim - 1))))


def put_batch(mesh: Mesh, arrays):
  """Host numpy batch -> global arrays split over 'data'.

  Each process passes its own share of the global batch (all of it when there
  is one process), as `jax.make_array_from_process_local_data` expects.
  """
  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  return jax.tree.map(one, arrays)


def process_slice(global_batch: int) -> slice:
  """This process's rows of a global batch (contiguous, equal shares)."""
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f'batch size {global_batch} does not split over {n} processes')
  per = global_batch // n
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def check_batch(mesh: Mesh, batch_size: int, what: str = 'data.batch_size') -> None:
  n = mesh.shape['data']
  if batch_size % n:
    raise ValueError(f'{what}={batch_size} does not split over the {n} devices of the '
                     "mesh's 'data' axis")
