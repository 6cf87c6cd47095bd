"""Sparse export: a trained run's masks stripped into a compact checkpoint,
and loading it back for inference.

Formats (one weights file plus export.json):
- 'csr': each masked matrix as compressed sparse rows (values, column
  indices in the smallest unsigned type that fits, row pointers); loads as
  `jax.experimental.sparse` BCOO arrays, and `sparse_apply` runs the model
  with its Linen nn.Dense and NNX nnx.Linear layers computing sparse-dense
  products; a sparse leaf used any other way is an error there, never a
  product with a placeholder. (`sparse.sparsify` over a whole Flax model
  fails here on custom-JVP activations such as relu, hence the interception
  of the layers.)
- 'nm': N:M matrices (2:4 and the like, along the input axis) as their kept
  values plus each value's position in its group of M, packed into bits
  (2 bits for M=4); loads back dense (CPUs have no N:M kernels).
- 'ell': each masked matrix in sliced ELL (`sparse_inference`: per output
  column its row indices and values, columns grouped by count); loads as
  `sparse_inference.EllMatrix`, which `sparse_apply` multiplies by gathers
  (faster than dense on CPU at small batches, see that module).
- 'dense': every leaf as the run holds it (pruned weights are zeros there),
  keyed as a weights file is ('params/<leaf>', 'model_state/<leaf>', see
  `train.weights`), plus each masked leaf's mask as bool under
  'masks/<leaf>' (`load_masks`). Not smaller, but a plain file that
  `finetune.init_from`, `sparsejax prune --from` and `perplexity --weights`
  read as it is: the pruned checkpoint in a portable container.
Leaves without a mask are stored dense. Either way the outputs equal the
masked dense model's: `verify_report` checks that on given inputs, within
`tolerance` (1e-5 of max(1, max |output|)).

The arrays go to weights.npz, or with `safetensors=True` to
weights.safetensors under the same names (index dtypes, bit-packed
positions and bool masks included; export.json names the file, and an
export.json without that name means weights.npz). A run or `sparsejax
prune` workdir is exported from its final checkpoint (`export`), or as a
Hugging Face Llama folder (`export_hf`: model.safetensors with Hugging Face
names, config.json, tokenizer.json, generation_config.json) that
transformers, `sparsejax perplexity --model DIR` and other tools load.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from sparsejax.core import tree as tree_lib
from sparsejax.programs import results as results_lib
from sparsejax.programs import sparse_inference
from sparsejax.train import weights as weights_lib

PyTree = Any
FORMATS = ('csr', 'nm', 'ell', 'dense')
CONTAINERS = {False: 'weights.npz', True: 'weights.safetensors'}   # by `safetensors`


TOLERANCE = 1e-5    # of max |output difference|, relative to max(1, max |output|)


class ExportError(ValueError):
  """An export that would not be what was asked for; names the leaf."""


class SparseUnsupported(ExportError):
  """Sparse leaves of an export that `sparse_apply` cannot multiply by (no
  nn.Dense or nnx.Linear used them); `leaves` names them."""

  def __init__(self, leaves):
    self.leaves = list(leaves)
    more = f' (and {len(self.leaves) - 1} more)' if len(self.leaves) > 1 else ''
    super().__init__(
        f'leaf {self.leaves[0]!r}{more} is stored sparse, but no nn.Dense or nnx.Linear '
        'multiplied by it: sparse_apply runs only those layers sparse, and would have '
        'computed with a placeholder for it. Load this export with as_sparse=False')


class CheckedDense(UserWarning):
  """`verify_report` checked an export loaded dense: its sparse products
  could not run (`SparseUnsupported`)."""


class NotVerifiable(ExportError):
  """An export whose outputs cannot be checked here (the run records no
  config to rebuild its model from); the files themselves are written."""


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


def export(workdir, fmt: str = 'csr', out=None, safetensors: bool = False) -> dict:
  """Exports a run's final checkpoint (or a `sparsejax prune` workdir's
  pruned state) to `out` (default workdir/export_<fmt>), as weights.npz or
  with `safetensors` weights.safetensors; returns the size report."""
  if fmt not in FORMATS:
    raise ValueError(f'unknown export format {fmt!r}; choose from {list(FORMATS)}')
  params, model_state, masks = results_lib.final_weights(workdir)
  return write_export(params, model_state, masks, fmt,
                      out or pathlib.Path(workdir) / f'export_{fmt}', safetensors=safetensors)


def write_export(params, model_state, masks, fmt: str, out, safetensors: bool = False) -> dict:
  """Writes params under `masks` (None leaves: dense) in format `fmt` to
  `out`: weights.npz, or weights.safetensors with `safetensors`."""
  if fmt not in FORMATS:
    raise ValueError(f'unknown export format {fmt!r}; choose from {list(FORMATS)}')
  flat_masks = dict(tree_lib.leaves_with_paths(masks))
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
  weights_lib.write_arrays(dense_path, {p: np.asarray(x) for p, x in
                                        tree_lib.leaves_with_paths(params)}, 'reference')
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
  for path, w in tree_lib.leaves_with_paths(params):
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
  for path, w in tree_lib.leaves_with_paths(params):
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
  for path, x in tree_lib.leaves_with_paths(model_state or {}):
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
  for k, v in arrays.items():
    if k.startswith('model_state/'):
      name = k[len('model_state/'):]
      state[name[:-len('#dense')] if name.endswith('#dense') else name] = jnp.asarray(v)
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


def _nest(flat: dict) -> dict:
  out: dict = {}
  for p, x in flat.items():
    node = out
    *parents, leaf = p.split('/')
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = x
  return out


def _is_sparse(leaf) -> bool:
  return isinstance(leaf, (sparse.BCOO, sparse_inference.EllMatrix))


def sparse_apply(apply_fn, params, x, *, model_state=None, **kwargs):
  """Runs `apply_fn({'params': ..., **model_state}, x, **kwargs)` with every
  layer whose kernel is a BCOO array or an EllMatrix computing x @ kernel as
  a sparse-dense product (`jax.experimental.sparse`, `sparse_inference.matmul`):
  Linen `nn.Dense` (intercepted by `nn.intercept_methods`) and, for an NNX
  model (`apply_fn` the `apply` of a `task.nnx_model`), `nnx.Linear` (its
  `dot_general` replaced). Other layers run as usual.

  The sparse leaves reach the model as NaN placeholders of their shape, and a
  sparse leaf that no such layer multiplied by raises `SparseUnsupported`
  naming it: other uses of a 2-D kernel (`x @ self.param(...)`, an embedding,
  a custom layer) cannot run sparse here, and computing with the placeholder
  would give a wrong answer. Load such an export with `as_sparse=False`."""
  import flax.linen as nn
  from sparsejax.train.task import nnx_model
  is_sparse = _is_sparse
  kernels = {p: k for p, k in tree_lib.leaves_with_paths(params, is_leaf=is_sparse)
             if is_sparse(k)}
  placeholders = jax.tree.map(lambda l: jnp.full(l.shape, jnp.nan, l.dtype) if is_sparse(l)
                              else l, params, is_leaf=is_sparse)
  used = set()

  def product(path, inputs):
    used.add(path)
    kernel = kernels[path]
    if isinstance(kernel, sparse_inference.EllMatrix):
      return sparse_inference.matmul(inputs, kernel)
    return jnp.asarray(inputs) @ kernel   # numpy @ BCOO would loop in Python

  def intercept(next_fun, args, kw, context):
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      path = '/'.join([*context.module.path, 'kernel'])
      if path in kernels:
        y = product(path, args[0])
        if context.module.use_bias:
          bias = context.module.variables['params']['bias']
          y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
        return y
    return next_fun(*args, **kw)

  if kernels and isinstance(getattr(apply_fn, '__self__', None), nnx_model):
    kwargs['module_hook'] = functools.partial(_sparse_linears, kernels=kernels, product=product)
  with nn.intercept_methods(intercept):
    out = apply_fn({'params': placeholders, **(model_state or {})}, x, **kwargs)
  unused = [p for p in kernels if p not in used]
  if unused:
    raise SparseUnsupported(unused)
  return out


def _sparse_linears(module, kernels, product):
  """Gives each nnx.Linear of `module` whose kernel is in `kernels` a
  `dot_general` that computes `product(path, inputs)` (nnx.Linear calls
  dot_general(inputs, kernel, contraction of inputs' last axis with the
  kernel's first), then adds its bias)."""
  from flax import nnx

  def dot(path, inputs, kernel, dimension_numbers, precision=None, **kw):
    del precision, kw
    if tuple(map(tuple, dimension_numbers[0])) != ((inputs.ndim - 1,), (0,)):
      raise ExportError(f'leaf {path!r}: nnx.Linear called dot_general with dimension '
                        f'numbers {dimension_numbers}, not x @ kernel')
    y = product(path, inputs)
    return y.astype(jnp.result_type(inputs.dtype, kernel.dtype))

  for where, node in nnx.iter_graph(module):
    path = '/'.join([*map(str, where), 'kernel'])
    if isinstance(node, nnx.Linear) and path in kernels:
      node.dot_general = functools.partial(dot, path)


def tolerance(reference) -> float:
  """The largest max |output difference| a check accepts against the
  outputs `reference`: TOLERANCE * max(1, max |reference|), relative for
  large outputs, absolute near zero (float32 sums of the same products in
  another order differ by a few ulps of the largest terms)."""
  leaves = [jnp.max(jnp.abs(jnp.asarray(r))) for r in jax.tree.leaves(reference)]
  return TOLERANCE * max([1.0, *(float(m) for m in leaves)])


def verify_report(apply_fn, params, model_state, x, export_dir, **apply_kwargs) -> dict:
  """The exported model (`export_dir`) against the masked dense model
  (`params`, `model_state`) on inputs `x`; `apply_fn` is a Linen-style
  apply(variables, x, **apply_kwargs) (an `nnx_model`'s apply for NNX).

  The export runs with its sparse kernels through `sparse_apply`. When the
  model multiplies by a sparse leaf outside nn.Dense / nnx.Linear, sparse
  products cannot run: the export is checked loaded dense instead, with a
  warning, and the report says so. Returns {'max_abs_diff', 'tolerance' (see
  `tolerance`), 'ok', 'examples', 'sparse_products' (whether the sparse
  kernels were exercised), 'dense_leaves' (sparse leaves checked dense)}."""
  want = apply_fn({'params': params, **(model_state or {})}, x, **apply_kwargs)
  loaded, state = load(export_dir, as_sparse=True)
  has_sparse = any(_is_sparse(l) for l in jax.tree.leaves(loaded, is_leaf=_is_sparse))
  dense_leaves, got = [], None
  if has_sparse:
    try:
      run = jax.jit(lambda p, s, x: sparse_apply(apply_fn, p, x, model_state=s,   # one program,
                                                 **apply_kwargs))            # not op by op
      got = run(loaded, state, x)
    except SparseUnsupported as e:
      dense_leaves = e.leaves
      warnings.warn(f'{e}; verifying the export loaded dense (as_sparse=False): its sparse '
                    'products were not exercised', CheckedDense, stacklevel=2)
  if got is None:
    loaded, state = load(export_dir, as_sparse=False)
    got = apply_fn({'params': loaded, **state}, x, **apply_kwargs)
  got, want = jax.tree.leaves(got), jax.tree.leaves(want)
  if len(got) != len(want):
    raise ExportError(f'the exported model gave {len(got)} outputs, the model {len(want)}')
  diff = float(np.max([jnp.max(jnp.abs(jnp.asarray(g) - jnp.asarray(w)))   # NaN stays NaN
                       for g, w in zip(got, want)]))
  tol = tolerance(want)
  return {'max_abs_diff': diff, 'tolerance': tol, 'ok': bool(diff <= tol),
          'examples': int(jax.tree.leaves(x)[0].shape[0]),
          'sparse_products': has_sparse and not dense_leaves, 'dense_leaves': dense_leaves}


def verify(apply_fn, params, model_state, x, export_dir, **apply_kwargs) -> float:
  """Max |output difference| between the exported model and the masked dense
  model (`params`, `model_state`) on inputs `x` (not finite when an output
  is not); `verify_report` has the tolerance and what was exercised."""
  return verify_report(apply_fn, params, model_state, x, export_dir,
                       **apply_kwargs)['max_abs_diff']


# --- Hugging Face Llama folders ------------------------------------------------------------

def recorded_config(workdir) -> dict:
  """The config a run recorded (config.json) or a `sparsejax prune` workdir
  (prune.json), as plain JSON."""
  workdir = pathlib.Path(workdir)
  for name in ('config.json', 'prune.json'):
    path = workdir / name
    if path.is_file():
      recorded = json.loads(path.read_text())
      if 'config' not in recorded:
        raise ExportError(f'{path} records a run started from Python, not from a config: '
                          'its model is unknown here')
      return recorded['config']
  raise ExportError(f'{workdir} has no config.json or prune.json: not a sparsejax run or '
                    'prune workdir')


def llama_architecture(config: dict):
  """(`LlamaConfig`, pretrained spec or None) of a recorded config whose
  model is 'llama': `model.options.pretrained`'s architecture with the
  other options over it, as `experiment.build_model` builds the model
  (settings that are not the architecture's, e.g. dtype, remat, pool, are
  left out)."""
  from sparsejax.models import pretrained
  from sparsejax.models.llama import LlamaConfig
  model = config.get('model') or {}
  options = dict(model.get('options') or {})
  spec = options.pop('pretrained', None)
  base = {}
  if spec:
    try:
      base = dataclasses.asdict(pretrained.architecture(spec))
    except (OSError, ImportError, ValueError) as e:
      raise ExportError(f'model.options.pretrained={spec!r}: {e}') from None
  fields = {f.name for f in dataclasses.fields(LlamaConfig)}
  return LlamaConfig(**{**base, **{k: v for k, v in options.items() if k in fields}}), spec


def export_hf(workdir, out) -> dict:
  """Writes a run's (or `sparsejax prune` workdir's, or PEFT run's merged)
  Llama-family model to the folder `out` as Hugging Face names
  (`llama_weights.save_hf`: model.safetensors, config.json), the tokenizer of
  `model.options.pretrained` (tokenizer.json) and its end-of-sequence ids
  (generation_config.json, where `lm_tokenizer.eos_ids` and transformers
  read them), so that `sparsejax perplexity --model out`, transformers and
  other tools load it. Reads the folder back: 'max_abs_diff' (0.0 for a
  faithful write) and 'same_config' in the returned report."""
  from sparsejax.models import llama_weights as lw, pretrained
  workdir = pathlib.Path(workdir)
  config = recorded_config(workdir)
  name = (config.get('model') or {}).get('name')
  if name != 'llama':
    raise ExportError(f"--hf writes Llama-family models (model 'llama'); {workdir} is a run "
                      f'of model {name!r}: export it with --format')
  arch, spec = llama_architecture(config)
  if not spec:
    raise ExportError(f"{workdir}: model 'llama' without model.options.pretrained; --hf takes "
                      'the tokenizer from that model, and this run names none')
  try:
    tokenizer, eos, _ = pretrained.load_tokenizer(spec)
  except (OSError, ImportError, ValueError) as e:
    raise ExportError(f'model.options.pretrained={spec!r}: {e}') from None
  params, _ = weights_lib.load_weights(workdir, lw.abstract_params(arch))
  out = pathlib.Path(out)
  lw.save_hf(out, params, arch, tokenizer)
  if eos:
    (out / 'generation_config.json').write_text(json.dumps(
        {'eos_token_id': eos[0] if len(eos) == 1 else list(eos)}, indent=2) + '\n')
  back, back_arch = lw.load_hf(out)
  mine = dict(tree_lib.leaves_with_paths(params))
  diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(mine[p], np.float64)),
                          initial=0.0)) for p, x in tree_lib.leaves_with_paths(back))
  return {'folder': str(out), 'pretrained': spec, 'files': sorted(f.name for f in out.iterdir()),
          'bytes': (out / 'model.safetensors').stat().st_size, 'eos_ids': list(eos),
          'max_abs_diff': diff, 'same_config': back_arch == arch}
