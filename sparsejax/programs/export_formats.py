"""The export's file formats: a run's weights under its masks written as
compact arrays (`write_export`), and read back (`load`, `load_masks`).

Formats (one weights file plus export.json):
- 'csr': each masked matrix as compressed sparse rows (values, column
  indices in the smallest unsigned type that fits, row pointers); loads as
  `jax.experimental.sparse` BCOO arrays, which `export_check.sparse_apply`
  multiplies by in the model's Linen nn.Dense and NNX nnx.Linear layers.
- 'nm': N:M matrices (2:4 and the like, along the input axis) as their kept
  values plus each value's position in its group of M, packed into bits
  (2 bits for M=4); loads back dense (CPUs have no N:M kernels).
- 'ell': each masked matrix in sliced ELL (`sparse_inference`: per output
  column its row indices and values, columns grouped by count); loads as
  `sparse_inference.EllMatrix`, which `export_check.sparse_apply` multiplies
  by gathers (faster than dense on CPU at small batches, see that module).
- 'dense': every leaf as the run holds it (pruned weights are zeros there),
  keyed as a weights file is ('params/<leaf>', 'model_state/<leaf>', see
  `train.weights`), plus each masked leaf's mask as bool under
  'masks/<leaf>' (`load_masks`). Not smaller, but a plain file that
  `finetune.init_from`, `sparsejax prune --from` and `perplexity --weights`
  read as it is: the pruned checkpoint in a portable container.
Leaves without a mask are stored dense.

The arrays go to weights.npz, or with `safetensors=True` to
weights.safetensors under the same names (index dtypes, bit-packed
positions and bool masks included; export.json names the file, and an
export.json without that name means weights.npz).
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from sparsejax.io.arrays import flatten, section, unflatten as _nest  # the key convention
from sparsejax.programs import sparse_inference
from sparsejax.train import weights as weights_lib

PyTree = Any
FORMATS = ('csr', 'nm', 'ell', 'dense')
CONTAINERS = {False: 'weights.npz', True: 'weights.safetensors'}   # by `safetensors`


class ExportError(ValueError):
  """An export that would not be what was asked for; names the leaf."""


def _index_dtype(n: int):
  for dt in (np.uint8, np.uint16, np.uint32):
    if n <= np.iinfo(dt).max + 1:
      return dt
  return np.uint64


def _nm_of(mask: np.ndarray) -> tuple[int, int] | None:
  """(n, m) when every group of m along axis -2 keeps exactly n."""
  if mask.ndim < 2:
    return None
  moved = np.moveaxis(mask, -2, -1)
  for m in (4, 8, 2, 16):
    if moved.shape[-1] % m == 0:
      counts = moved.reshape(*moved.shape[:-1], -1, m).sum(-1)
      if np.all(counts == counts.flat[0]) and 0 < counts.flat[0] < m:
        return int(counts.flat[0]), m
  return None


def _pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
  flat = values.astype(np.uint8).ravel()
  per = 8 // bits
  flat = np.concatenate([flat, np.zeros((-len(flat)) % per, np.uint8)])
  groups = flat.reshape(-1, per)
  return np.bitwise_or.reduce(groups << (bits * np.arange(per, dtype=np.uint8)), axis=1)


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
  per = 8 // bits
  shifts = bits * np.arange(per, dtype=np.uint8)
  out = (packed[:, None] >> shifts) & ((1 << bits) - 1)
  return out.ravel()[:count]


def write_export(params, model_state, masks, fmt: str, out, safetensors: bool = False) -> dict:
  """Writes params under `masks` (None leaves: dense) in format `fmt` to
  `out`: weights.npz, or weights.safetensors with `safetensors`."""
  if fmt not in FORMATS:
    raise ValueError(f'unknown export format {fmt!r}; choose from {list(FORMATS)}')
  flat_masks = flatten(masks)
  if fmt == 'nm':
    not_nm = [p for p, m in flat_masks.items() if m is not None and not np.all(m)
              and _nm_of(np.asarray(m)) is None]
    if not_nm:
      raise ExportError(f"format 'nm' needs N:M masks, but leaf {not_nm[0]!r} (and "
                        f'{len(not_nm) - 1} more) is not N:M along its input axis: it would '
                        "be stored dense. Use format 'csr', or prune with pattern 'nm'")
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  if fmt == 'dense':
    arrays, meta = _dense_arrays(params, model_state, flat_masks)
  else:
    arrays, meta = _sparse_arrays(params, model_state, flat_masks, fmt)
  name = CONTAINERS[bool(safetensors)]
  meta['file'] = name
  weights_lib.write_arrays(out / name, arrays, f'sparsejax-export-{fmt}')
  sparse_bytes = (out / name).stat().st_size
  dense_path = out / f'dense_reference{pathlib.Path(name).suffix}'
  weights_lib.write_arrays(dense_path, {p: np.asarray(x) for p, x in flatten(params).items()},
                           'reference')
  dense_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(params))
  report = {'format': fmt, 'file': str(out / name), 'bytes_on_disk': sparse_bytes,
            'dense_bytes_on_disk': dense_path.stat().st_size, 'dense_array_bytes': dense_bytes,
            'ratio': sparse_bytes / dense_path.stat().st_size,
            'leaves': {p: v['kind'] for p, v in meta['leaves'].items()}}
  dense_path.unlink()
  meta['report'] = report
  (out / 'export.json').write_text(json.dumps(meta, indent=1) + '\n')
  return report


def _dense_arrays(params, model_state, flat_masks) -> tuple[dict, dict]:
  """Format 'dense': a weights file's keys, plus 'masks/<leaf>' (bool) for
  each leaf with a mask that prunes something."""
  arrays = weights_lib.flat_arrays(params, model_state)
  meta = {'format': 'dense', 'leaves': {}}
  for path, w in flatten(params).items():
    m = flat_masks.get(path)
    masked = m is not None and not np.all(np.asarray(m))
    if masked:
      arrays[f'masks/{path}'] = np.asarray(m, bool)
    meta['leaves'][path] = {'kind': 'dense', 'shape': list(np.shape(w)), 'masked': masked}
  return arrays, meta


def _sparse_arrays(params, model_state, flat_masks, fmt: str) -> tuple[dict, dict]:
  """Formats 'csr', 'nm', 'ell': each masked matrix's arrays under
  '<leaf>#<part>', the rest under '<leaf>#dense'."""
  arrays, meta = {}, {'format': fmt, 'leaves': {}}
  for path, w in flatten(params).items():
    w = np.asarray(w)
    m = flat_masks.get(path)
    m = None if m is None else np.asarray(m)
    if m is not None and fmt == 'csr' and w.ndim == 2:
      rows, cols = np.nonzero(m)
      indptr = np.searchsorted(rows, np.arange(w.shape[0] + 1)).astype(np.int64)
      arrays[f'{path}#data'] = w[rows, cols]
      arrays[f'{path}#indices'] = cols.astype(_index_dtype(w.shape[1]))
      arrays[f'{path}#indptr'] = indptr.astype(_index_dtype(int(m.sum()) + 1))
      meta['leaves'][path] = {'kind': 'csr', 'shape': list(w.shape), 'dtype': str(w.dtype)}
    elif m is not None and fmt == 'nm' and _nm_of(m) is not None:
      n, mm = _nm_of(m)
      moved_w, moved_m = np.moveaxis(w, -2, -1), np.moveaxis(m, -2, -1)
      gw = moved_w.reshape(*moved_w.shape[:-1], -1, mm)
      gm = moved_m.reshape(*moved_m.shape[:-1], -1, mm)
      pos = np.argsort(~gm, axis=-1, kind='stable')[..., :n]      # kept positions, ascending
      arrays[f'{path}#values'] = np.take_along_axis(gw, pos, axis=-1)
      bits = max(1, math.ceil(math.log2(mm)))
      arrays[f'{path}#positions'] = _pack_bits(pos, bits)
      meta['leaves'][path] = {'kind': 'nm', 'n': n, 'm': mm, 'bits': bits,
                              'shape': list(w.shape), 'dtype': str(w.dtype)}
    elif m is not None and fmt == 'ell' and w.ndim == 2:
      ell_arrays, info = sparse_inference.to_arrays(sparse_inference.from_dense(w, m))
      arrays.update({f'{path}#{k}': v for k, v in ell_arrays.items()})
      meta['leaves'][path] = {'kind': 'ell', 'dtype': str(w.dtype), **info}
    else:
      arrays[f'{path}#dense'] = w
      meta['leaves'][path] = {'kind': 'dense', 'shape': list(w.shape)}
  for path, x in flatten(model_state).items():
    arrays[f'model_state/{path}#dense'] = np.asarray(x)
  return arrays, meta


def _read(path: pathlib.Path) -> tuple[dict, dict]:
  """(export.json, {name: array}) of an export folder: the file export.json
  names (weights.npz when it names none: exports written before
  safetensors)."""
  meta = json.loads((path / 'export.json').read_text())
  return meta, weights_lib.read_arrays(path / meta.get('file', 'weights.npz'))


def load(path, as_sparse: bool = True) -> tuple[PyTree, dict]:
  """(params, model_state) of an export (weights.npz or .safetensors); CSR
  leaves as BCOO and ELL leaves as `sparse_inference.EllMatrix` when
  `as_sparse`, else dense."""
  path = pathlib.Path(path)
  meta, arrays = _read(path)
  flat, state = {}, {}
  for p, info in meta['leaves'].items():
    kind, shape = info['kind'], tuple(info['shape'])
    if kind == 'dense':
      key = f'params/{p}' if meta['format'] == 'dense' else f'{p}#dense'
      flat[p] = jnp.asarray(arrays[key])
    elif kind == 'csr':
      data = jnp.asarray(arrays[f'{p}#data'])
      bcsr = sparse.BCSR((data, jnp.asarray(arrays[f'{p}#indices'].astype(np.int32)),
                          jnp.asarray(arrays[f'{p}#indptr'].astype(np.int32))), shape=shape)
      flat[p] = bcsr.to_bcoo() if as_sparse else bcsr.todense()
    elif kind == 'ell':
      prefix = f'{p}#'
      ell = sparse_inference.from_arrays(
          {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, info)
      flat[p] = ell if as_sparse else sparse_inference.todense(ell)
    else:
      flat[p] = jnp.asarray(_nm_dense(arrays, p, info))
  for name, v in section(arrays, 'model_state/').items():
    state[name.removesuffix('#dense')] = jnp.asarray(v)
  return _nest(flat), _nest(state)


def load_masks(path) -> PyTree:
  """The masks of a 'dense' export (bool numpy, None for leaves it keeps
  whole), e.g. for `FixedMask(masks=...)`; other formats hold their masks in
  their sparsity pattern (load them with `as_sparse=False`)."""
  meta, arrays = _read(pathlib.Path(path))
  if meta['format'] != 'dense':
    raise ExportError(f"{path} is a {meta['format']!r} export; only 'dense' stores masks")
  return _nest({p: arrays.get(f'masks/{p}') for p in meta['leaves']})


def _nm_dense(arrays, p, info) -> np.ndarray:
  m, shape = info["m"], tuple(info["shape"])
  values = arrays[f'{p}#values']
  pos = _unpack_bits(arrays[f'{p}#positions'], info['bits'], values.size).reshape(values.shape)
  groups = np.zeros(values.shape[:-1] + (m,), values.dtype)
  np.put_along_axis(groups, pos.astype(np.int64), values, axis=-1)
  moved = groups.reshape(*groups.shape[:-2], -1)
  return np.moveaxis(moved, -1, -2).reshape(shape)
