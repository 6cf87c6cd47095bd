"""Weights in and out: sparsejax run directories and their checkpoints (final
and named), .npz / .safetensors files keyed by leaf path, and pretrained
Llama-family LMs ('smollm2', .gguf, Hugging Face folders), checked against
a model's structure. (Sparse formats: `programs.export`.)"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.models import safetensors_io
from sparsejax.train import checkpoint as ckpt_lib, inspection

PyTree = Any


def load_weights(path, abstract_params: PyTree, abstract_model_state: PyTree | None = None
                 ) -> tuple[PyTree, PyTree]:
  """(params, model_state) from a run, a checkpoint or a weights file, checked
  against the model's structure; errors name the offending leaf or key."""
  from sparsejax.data import lm_tokenizer
  if lm_tokenizer.is_model_spec(path):
    return _pretrained_lm(path, abstract_params), {}
  path = pathlib.Path(path).expanduser()
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'finetune.init_from: {path} does not exist')
  if path.is_dir() and (path / 'peft.json').is_file():
    # A `finetune.method` run (row, LoRA, unstructured, full): its checkpoints
    # hold the method's trainable tree (deltas, factors, 'all/<leaf>'), not
    # the model's params; the fine-tuned model is the merged.npz it ends with.
    if not (path / 'merged.npz').is_file():
      raise ckpt_lib.CheckpointError(
          f'{path} is a parameter-efficient fine-tuning run without its merged.npz (written '
          'when the run ends); finish the run, or merge its delta (sparsejax merge)')
    path = path / 'merged.npz'
  if path.is_dir():
    state = ckpt_lib.restore_raw(step_dir(path))
    params, model_state = state['params'], state.get('model_state') or {}
  elif path.suffix in ('.npz', '.safetensors'):
    flat = _read_flat(path)
    params = _unflatten(flat, abstract_params, str(path), prefix='params/')
    model_state = {}
    if abstract_model_state:
      model_state = _unflatten(flat, abstract_model_state, str(path), prefix='model_state/')
  else:
    raise ckpt_lib.CheckpointError(f'finetune.init_from: {path} is neither a sparsejax run '
                                   'directory nor a .npz / .safetensors file')
  try:
    tree_lib.check_same_structure(params, abstract_params, f'the weights in {path}')
  except ValueError as e:
    raise ckpt_lib.CheckpointError(str(e)) from None
  return params, model_state


def _pretrained_lm(spec, abstract_params: PyTree) -> PyTree:
  """A pretrained Llama-family LM's params ('smollm2', a .gguf file, a
  Hugging Face folder), checked against the model's structure."""
  from sparsejax.models import pretrained
  try:
    lm = pretrained.load_lm(str(spec))
  except (OSError, ImportError, ValueError) as e:
    raise ckpt_lib.CheckpointError(f'finetune.init_from={str(spec)!r}: {e}') from None
  try:
    tree_lib.check_same_structure(lm.params, abstract_params, f'the weights of {spec}')
  except ValueError as e:
    raise ckpt_lib.CheckpointError(f'{e} (is model.options.pretrained the same model?)') from None
  return lm.params


def step_dir(path: pathlib.Path) -> pathlib.Path:
  """The checkpoint folder of a run directory, checkpoints folder or step folder."""
  return inspection.resolve(path)


def _read_flat(path: pathlib.Path) -> dict[str, np.ndarray]:
  if path.suffix == '.npz':
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  return safetensors_io.load_safetensors(path)


def write_npz(path, params: PyTree, model_state: PyTree = None) -> pathlib.Path:
  """params (and model state) as an .npz keyed 'params/<leaf path>' (and
  'model_state/<leaf path>'): what `load_weights` reads back."""
  arrays = {f'params/{p}': np.asarray(x) for p, x in tree_lib.leaves_with_paths(params)}
  arrays.update({f'model_state/{p}': np.asarray(x)
                 for p, x in tree_lib.leaves_with_paths(model_state or {})})
  path = pathlib.Path(path)
  np.savez(path, **arrays)
  return path


def final_weights(workdir) -> tuple[Any, Any, Any]:
  """(params, model_state, masks) of a run's latest checkpoint, as numpy."""
  state = ckpt_lib.restore_raw(inspection.resolve(workdir))
  masks = _unpacked(_find_masks(state['opt_state']), state['params'])
  return state['params'], state.get('model_state') or {}, masks


def _unpacked(masks, params):
  """Raw masks with bit-packed leaves ({'bits': uint8}, from
  `sparsify(..., pack_masks=True)`) unpacked to bool in their param's shape."""
  if isinstance(masks, dict) and set(masks) == {'bits'} and hasattr(params, 'shape'):
    n = int(np.prod(params.shape))
    return np.unpackbits(np.asarray(masks['bits']), count=n).reshape(params.shape).astype(bool)
  if isinstance(masks, dict) and isinstance(params, dict):
    return {k: _unpacked(v, params.get(k)) for k, v in masks.items()}
  return masks


def _find_masks(opt_state):
  """The 'masks' entry of sparsify's state, wherever wrappers (MultiSteps) put it."""
  if isinstance(opt_state, dict):
    if 'masks' in opt_state and 'schedule_state' in opt_state:
      return opt_state['masks']
    children = opt_state.values()
  elif isinstance(opt_state, (list, tuple)):
    children = opt_state
  else:
    children = ()
  for child in children:
    found = _find_masks(child)
    if found is not None:
      return found
  return None


def named_weights(workdir, name: str) -> tuple[Any, Any]:
  """(params, model_state) of a run's named checkpoint ('init', 'step_K', 'best')."""
  path = pathlib.Path(workdir) / 'checkpoints' / 'named' / name
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'no named checkpoint {name!r} at {path}')
  tree = ckpt_lib.restore_raw(path)
  return tree['params'], tree.get('model_state') or {}


def _unflatten(flat: dict, abstract: PyTree, source: str, prefix: str) -> PyTree:
  """Leaves keyed by leaf path ('hidden_0/kernel', with or without `prefix`,
  '/' or '.' separators) -> a tree shaped like `abstract`."""
  norm = {}
  for k, v in flat.items():
    key = k[len(prefix):] if k.startswith(prefix) else k
    norm[key.replace('.', '/')] = v
  wanted = [p for p, _ in tree_lib.leaves_with_paths(abstract)]
  missing = [p for p in wanted if p not in norm]
  if missing:
    raise ckpt_lib.CheckpointError(f'{source} has no key {missing[0]!r}'
                                   + (f' (and {len(missing) - 1} more)' if len(missing) > 1
                                      else '') + f'; its keys: {sorted(flat)[:8]}...')
  extra = sorted(set(norm) - set(wanted))
  if extra and prefix == 'params/':
    raise ckpt_lib.CheckpointError(f'{source} has a key {extra[0]!r} that the model does '
                                   'not have')
  return tree_lib.map_with_path(lambda p, x: np.asarray(norm[p]), abstract)
