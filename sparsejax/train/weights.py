"""Weights in and out for the training stack: sparsejax run directories and
their checkpoints (final and named), weights files, and pretrained
Llama-family LMs ('smollm2', .gguf, Hugging Face folders), checked against a
model's structure; errors are CheckpointErrors naming the leaf or key.

The files themselves are `sparsejax.io`'s (`io.arrays`: one key convention,
'params/<leaf path>', 'model_state/<leaf path>' and a pruned export's
'masks/<leaf path>', as .npz or .safetensors by the file's suffix; both
round-trip bitwise through `load_weights`, bfloat16 included); the names
below are the ones code and configs used before and stay. A .safetensors
file written here records {'format': ..., 'sparsejax_version': ...} in its
header (`safetensors_metadata` reads it back); readers need not look at it.
(Sparse formats: `programs.export_formats`.)
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Any

import numpy as np

import sparsejax
from sparsejax.core import tree as tree_lib
from sparsejax.io import arrays as io_arrays
from sparsejax.io.arrays import (SECTIONS, SUFFIXES, flat_arrays,  # noqa: F401  (re-exported)
                                 read_arrays, safetensors_metadata, write_npz)
from sparsejax.io.assets import is_model_spec
from sparsejax.train import checkpoint as ckpt_lib, inspection

PyTree = Any


def load_weights(path, abstract_params: PyTree, abstract_model_state: PyTree | None = None
                 ) -> tuple[PyTree, PyTree]:
  """(params, model_state) from a run, a checkpoint or a weights file, checked
  against the model's structure; errors name the offending leaf or key."""
  if is_model_spec(path):
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
    state = ckpt_lib.restore_raw(inspection.resolve(path))
    params, model_state = state['params'], state.get('model_state') or {}
  elif path.suffix in ('.npz', '.safetensors'):
    flat = read_arrays(path)
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


@contextlib.contextmanager
def _as_checkpoint_error():
  """io's WeightsFileError as the CheckpointError callers here catch."""
  try:
    yield
  except io_arrays.WeightsFileError as e:
    raise ckpt_lib.CheckpointError(str(e)) from None


def _stamped(metadata: dict[str, str]) -> dict[str, str]:
  return {**metadata, 'sparsejax_version': sparsejax.__version__}


def write_weights(path, params: PyTree, model_state: PyTree = None) -> pathlib.Path:
  """params (and model state) keyed as `write_npz` keys them, as .npz or
  .safetensors by the suffix of `path`: what `load_weights` (and so
  `finetune.init_from`, `sparsejax prune --from`, `perplexity --weights`)
  reads back. Another suffix is a CheckpointError naming both."""
  return write_arrays(path, flat_arrays(params, model_state), 'sparsejax-weights')


def write_arrays(path, arrays: dict[str, Any], content: str) -> pathlib.Path:
  """{key: array} to the .npz or .safetensors `path` (by its suffix); a
  .safetensors header records `content` as its 'format' and the sparsejax
  version. Returns the path."""
  with _as_checkpoint_error():
    return io_arrays.write_arrays(path, arrays, _stamped({'format': content}))


def save_safetensors(path, arrays: dict[str, Any], metadata: dict[str, str]) -> pathlib.Path:
  """Writes {key: array} as safetensors (`io.arrays.save_safetensors`) with
  `metadata` plus 'sparsejax_version' in the header; a dtype safetensors has
  no code for is a CheckpointError naming the key."""
  with _as_checkpoint_error():
    return io_arrays.save_safetensors(path, arrays, _stamped(metadata))


def final_weights(workdir) -> tuple[Any, Any, Any]:
  """(params, model_state, masks) of a run's latest checkpoint, or of a
  `sparsejax prune` workdir's pruned state, as numpy."""
  state = ckpt_lib.restore_raw(inspection.resolve(workdir))
  if 'opt_state' not in state and 'masks' in state:   # a `sparsejax prune` workdir
    return state['params'], state.get('model_state') or {}, state['masks']
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
    if k.startswith(SECTIONS) and not k.startswith(prefix):
      continue          # another section of the file (model state, masks)
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
  return tree_lib.map_with_path(lambda p, x: io_arrays.typed(np.asarray(norm[p]), x), abstract)
