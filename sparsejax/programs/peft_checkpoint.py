"""PEFT checkpoints that hold only what was trained, and merging them back.

A fine-tuning run's checkpoint carries a frozen copy of the whole base model,
and its `merged.npz` is a full model too; but a parameter-efficient method
changes a small part of the weights. `save_delta(workdir, out)` writes that
part alone, as a folder, in one of two layouts.

The sparsejax layout (every method):

- `delta.npz` (or `delta.safetensors`, same keys, with `safetensors=True`):
  per method, what was trained. 'row' (Li & Bhaskara 2025): per target
  kernel the (r, d_in) deltas of its trained rows (output neurons, columns of
  the Flax kernel; for a conv kernel (r, kh, kw, c_in), output channels)
  under 'rows/<leaf>' and their int32 indices under 'rows_index/<leaf>'.
  'lora' (Hu et al. 2021): the factors under 'lora_a/<leaf>' (d_in, r) and
  'lora_b/<leaf>' (r, d_out). 'unstructured': the K deltas ('sparse/<leaf>')
  and int32 flat indices ('sparse_index/'). 'full': every weight
  ('all/<leaf>'; no smaller than the model). Always: the head
  (`finetune.head`) in full ('head/<leaf>') and the model state the run
  ended with ('model_state/<leaf>', e.g. BatchNorm statistics).
- `delta.json`: the manifest: the method (kind, targets, head, rank, LoRA
  scale), the base weights the run started from (the .safetensors / .npz
  file, orbax checkpoint folder, GGUF file or Hugging Face folder, its path
  and sha256), every leaf of the full model (shape, dtype, and the part that
  supplies it) and the arrays file.

The PEFT library's adapter layout (`layout='peft'`, LoRA only), which
Hugging Face PEFT loads (`PeftModel.from_pretrained(base, folder)`):
adapter_model.safetensors, adapter_config.json and the same delta.json
(`peft_adapter`). Row, unstructured and full deltas have no PEFT
equivalent and keep the sparsejax layout.

`merge(delta, base)` checks the base's sha256 against the manifest (a
different base is refused, naming the file and both hashes), loads it
(`peft_base.base_leaves`), and rebuilds the params with the same
`Method.merge` the model computes in its forward pass
(`peft_methods.Reparametrized`), so rows and head equal the run's
`merged.npz` bitwise and LoRA's W + scale * A @ B is computed as in training
(from either layout: the transposes are exact). `write_merged` writes the
full model as .npz or .safetensors by the suffix (keys 'params/<leaf>',
'model_state/<leaf>', as a run's merged.npz; loadable by finetune.init_from).
An adapter folder without delta.json (written by another tool) is refused.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.io.arrays import flatten, section, unflatten
from sparsejax.io.assets import is_model_spec
from sparsejax.programs.peft_adapter import (ADAPTER_CONFIG, ADAPTER_STATE, ADAPTER_WEIGHTS,
                                             read_adapter, write_adapter)
from sparsejax.programs.peft_base import DeltaError, base_leaves, base_reference, sha256_of
from sparsejax.programs.peft_methods import Method
from sparsejax.train import checkpoint as ckpt_lib, inspection, weights as weights_lib

PyTree = Any
FORMAT = 'sparsejax-peft-delta'
MANIFEST, ARRAYS = 'delta.json', 'delta.npz'
LAYOUTS = ('sparsejax', 'peft')


# --- writing ----------------------------------------------------------------------------

def write_delta(out, method: Method, trainable: dict, full: PyTree, base: dict,
                model_state: PyTree = None, *, layout: str = 'sparsejax',
                safetensors: bool = False, naming: str | None = None) -> dict:
  """Writes the trained part of a PEFT model to folder `out`; `trainable` is
  the method's trainable tree, `full` the full params (or their shapes: only
  shapes and dtypes are read), `base` a `base_reference`. `layout` 'sparsejax'
  writes delta.npz (delta.safetensors with `safetensors`); 'peft' the PEFT
  library's adapter (LoRA only), its modules named as `naming` says ('llama':
  Hugging Face's; None: ours, see `peft_adapter`). Returns the sizes."""
  if layout not in LAYOUTS:
    raise DeltaError(f'unknown delta layout {layout!r}; choose from {list(LAYOUTS)}')
  if layout == 'peft' and method.kind != 'lora':
    raise DeltaError(f"the PEFT library's adapter layout holds LoRA; a {method.kind!r} delta "
                     'has no equivalent there and keeps the sparsejax layout')
  arrays, parts = _method_arrays(method, trainable)
  leaves = {p: {'shape': list(x.shape), 'dtype': str(np.dtype(x.dtype)),
                'part': parts.get(p, 'base')} for p, x in flatten(full).items()}
  missing = sorted(set(parts) - set(leaves))
  if missing:
    raise DeltaError(f'the trained leaf {missing[0]!r} is not a leaf of the full params')
  state = {p: np.asarray(x) for p, x in flatten(model_state).items()}
  manifest = {'format': FORMAT, 'version': 1,
              'method': {'kind': method.kind, 'targets': list(method.targets),
                         'head': list(method.head), 'rank': method.rank,
                         'scale': method.scale},
              'base': base, 'leaves': leaves,
              'model_state': {p: {'shape': list(x.shape), 'dtype': str(x.dtype)}
                              for p, x in state.items()}}
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  if layout == 'peft':
    manifest.update(write_adapter(out, method, trainable, leaves, base, state, naming))
  else:
    arrays.update({f'model_state/{p}': x for p, x in state.items()})
    manifest['arrays'] = 'delta.safetensors' if safetensors else ARRAYS
    weights_lib.write_arrays(out / manifest['arrays'], arrays, FORMAT)
  (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n')
  return sizes(out)


def _method_arrays(method: Method, trainable: dict) -> tuple[dict, dict]:
  """({key: array}, {leaf: part}) of the sparsejax layout."""
  arrays: dict[str, np.ndarray] = {}
  parts = {}
  if method.kind == 'full':
    for p, x in flatten(trainable['all']).items():
      arrays[f'all/{p}'], parts[p] = np.asarray(x), 'all'
    return arrays, parts
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
  return arrays, parts


def _int32(idx, path) -> np.ndarray:
  idx = np.asarray(idx, np.int64)
  if idx.size and idx.max() > np.iinfo(np.int32).max:
    raise DeltaError(f'{path!r}: an index {idx.max()} does not fit in int32')
  return idx.astype(np.int32)


def sizes(delta) -> dict:
  """Bytes of a delta on disk (its layout's files), and of the full model's
  arrays it stands for."""
  delta = pathlib.Path(delta)
  manifest = read_manifest(delta)
  full = sum(int(np.prod(v['shape'])) * jnp.dtype(v['dtype']).itemsize
             for v in [*manifest['leaves'].values(), *manifest['model_state'].values()])
  on_disk = sum(f.stat().st_size for f in _files(delta, manifest))
  return {'delta': str(delta), 'method': manifest['method']['kind'],
          'layout': manifest.get('layout', 'sparsejax'),
          'delta_bytes': on_disk, 'full_array_bytes': full, 'ratio': on_disk / full}


def _files(delta: pathlib.Path, manifest: dict) -> list[pathlib.Path]:
  if manifest.get('layout') == 'peft':
    names = [ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_STATE]
  else:
    names = [manifest.get('arrays', ARRAYS)]
  return [delta / n for n in [*names, MANIFEST] if (delta / n).is_file()]


def save_delta(workdir, out=None, base: str | None = None, *, layout: str = 'sparsejax',
               safetensors: bool = False) -> dict:
  """The delta of a finished PEFT run (its `peft.json`, final checkpoint and
  config.json's finetune.init_from, or `base` when given) written to `out`
  (default workdir/peft_delta, or workdir/peft_adapter for `layout` 'peft';
  see `write_delta`). Reads what it wrote back, merges it onto the run's
  frozen base and compares with its `merged.npz`
  ('max_abs_diff_vs_merged_npz')."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'peft.json').exists():
    raise DeltaError(f'{workdir} has no peft.json: not a parameter-efficient fine-tuning '
                     'run (finetune.method row, lora, unstructured or full)')
  method = method_from_json(json.loads((workdir / 'peft.json').read_text()))
  if layout == 'peft' and method.kind != 'lora':
    raise DeltaError(f"{workdir} is a {method.kind!r} run: the PEFT library's adapter layout "
                     'holds LoRA only; write its delta without --layout peft')
  recorded = json.loads((workdir / 'config.json').read_text()).get('config', {})
  if base is None:
    base = recorded.get('finetune', {}).get('init_from')
    if not base:
      raise DeltaError(f'{workdir}/config.json records no finetune.init_from; pass the base')
  naming = 'llama' if (recorded.get('model') or {}).get('name') == 'llama' else None
  state = ckpt_lib.restore_raw(inspection.resolve(workdir))
  model_state = dict(state.get('model_state') or {})
  frozen = model_state.pop('frozen', None)
  full = state['params']['all'] if method.kind == 'full' else frozen
  out = pathlib.Path(out or workdir / ('peft_adapter' if layout == 'peft' else 'peft_delta'))
  report = write_delta(out, method, state['params'], full, base_reference(base), model_state,
                       layout=layout, safetensors=safetensors, naming=naming)
  merged_npz = workdir / 'merged.npz'
  if merged_npz.exists():
    _, written, trainable, _ = load_delta(out)
    ours = flatten(written.merged_params(frozen, trainable))
    merged = weights_lib.read_arrays(merged_npz)
    report['max_abs_diff_vs_merged_npz'] = max(
        float(np.max(np.abs(np.asarray(ours[k[len('params/'):]], np.float64)
                            - np.asarray(v, np.float64)), initial=0.0))
        for k, v in merged.items() if k.startswith('params/'))
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
  if not path.exists() and (pathlib.Path(delta) / ADAPTER_CONFIG).exists():
    raise DeltaError(f'{delta} is a PEFT adapter without sparsejax\'s {MANIFEST} (the base and '
                     'the leaves it adapts): only adapters written by sparsejax export '
                     '--peft-delta --layout peft merge here')
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
  m = manifest['method']
  if manifest.get('layout') == 'peft':
    trainable, model_state = read_adapter(delta, manifest)
    return manifest, Method('lora', tuple(m['targets']), tuple(m['head']), rank=m['rank'],
                            scale=m['scale']), trainable, model_state
  arrays = weights_lib.read_arrays(delta / manifest.get('arrays', ARRAYS))
  rows_index, sparse_index = section(arrays, 'rows_index/'), section(arrays, 'sparse_index/')
  method = Method(m['kind'], tuple(m['targets']), tuple(m['head']),
                  rows=tuple(tuple(int(i) for i in rows_index[p]) for p in m['targets']
                             if p in rows_index),
                  entries=tuple(tuple(int(i) for i in sparse_index.get(p, ()))
                                for p in m['targets']) if sparse_index else (),
                  rank=m['rank'], scale=m['scale'])
  if method.kind == 'full':
    trainable = {'all': unflatten(section(arrays, 'all/'))}
  else:
    a, b = section(arrays, 'lora_a/'), section(arrays, 'lora_b/')
    trainable = {'head': section(arrays, 'head/')}
    trainable.update({'rows': section(arrays, 'rows/')} if method.kind == 'row' else
                     {'lora': {p: {'a': a[p], 'b': b[p]} for p in a}} if method.kind == 'lora'
                     else {'sparse': section(arrays, 'sparse/')})
  return manifest, method, trainable, unflatten(section(arrays, 'model_state/'))


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
  if path.is_dir() and not is_model_spec(path):
    path = inspection.resolve(path)   # a run folder: its latest step, as when saved
  want = manifest['base']['sha256']
  if check:
    got = sha256_of(path)
    if got != want:
      raise DeltaError(f'base {path} has sha256 {got}, but the delta '
                       f'{pathlib.Path(delta) / MANIFEST} was trained on sha256 {want} '
                       f"({manifest['base']['path']}); refusing to merge onto other weights")
  needed = {p: v for p, v in leaves.items() if v['part'] not in ('head', 'all')}
  flat = base_leaves(path, needed)
  flat.update(trainable['head'])     # a placeholder: merge takes the head from `trainable`
  for p, v in leaves.items():
    x = flat[p]
    if list(x.shape) != v['shape'] or str(x.dtype) != v['dtype']:
      raise DeltaError(f'{path}: leaf {p!r} is {x.dtype}{list(x.shape)}, the delta needs '
                       f"{v['dtype']}{v['shape']}")
  params = method.merged_params(unflatten({p: flat[p] for p in leaves}), trainable)
  return params, model_state


def write_merged(delta, out, base=None, *, check: bool = True) -> dict:
  """Merges (see `merge`) and writes the full model to `out`, .npz or
  .safetensors by its suffix (keys 'params/<leaf>', 'model_state/<leaf>', as
  a run's merged.npz; another suffix gets .npz appended, as numpy would);
  the sizes."""
  params, model_state = merge(delta, base, check=check)
  out = pathlib.Path(out)
  if out.suffix not in weights_lib.SUFFIXES:
    out = out.with_name(out.name + '.npz')
  out.parent.mkdir(parents=True, exist_ok=True)
  path = weights_lib.write_weights(out, params, model_state)
  return {**sizes(delta), 'merged': str(path), 'merged_bytes': path.stat().st_size}
