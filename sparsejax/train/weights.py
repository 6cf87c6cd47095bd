"""Reading weights: sparsejax run directories and checkpoints, and .npz /
.safetensors files keyed by leaf path, checked against a model's structure.
(Writing: `programs.export` for sparse files, `programs.peft.save_merged` for
merged fine-tuned weights.)"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.train import checkpoint as ckpt_lib, inspection

PyTree = Any


def load_weights(path, abstract_params: PyTree, abstract_model_state: PyTree | None = None
                 ) -> tuple[PyTree, PyTree]:
  """(params, model_state) from a run, a checkpoint or a weights file, checked
  against the model's structure; errors name the offending leaf or key."""
  path = pathlib.Path(path).expanduser()
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'finetune.init_from: {path} does not exist')
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


def step_dir(path: pathlib.Path) -> pathlib.Path:
  """The checkpoint folder of a run directory, checkpoints folder or step folder."""
  return inspection.resolve(path)


def _read_flat(path: pathlib.Path) -> dict[str, np.ndarray]:
  if path.suffix == '.npz':
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  from safetensors.numpy import load_file
  return load_file(str(path))


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
