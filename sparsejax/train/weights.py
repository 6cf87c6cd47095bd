"""Weights in and out: sparsejax run directories and their checkpoints (final
and named), .npz / .safetensors files keyed by leaf path, and pretrained
Llama-family LMs ('smollm2', .gguf, Hugging Face folders), checked against
a model's structure. (Sparse formats: `programs.export_formats`.)

A weights file holds one array per leaf under 'params/<leaf path>' (and
'model_state/<leaf path>'; a pruned export adds 'masks/<leaf path>'), as
.npz or .safetensors, chosen by the file's suffix (`write_weights`). Both
round-trip bitwise through `load_weights`, bfloat16 included (safetensors
stores ml_dtypes' bfloat16 as BF16; np.savez as 2-byte void, which
`load_weights` views back as the leaf's bfloat16). A .safetensors file
written here records {'format': 'sparsejax-weights', 'sparsejax_version':
...} in its header (`safetensors_metadata` reads it back); readers need not
look at it.
"""

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


read_arrays = _read_flat     # {key: array} of an .npz or .safetensors file

SECTIONS = ('params/', 'model_state/', 'masks/')   # key prefixes of a weights file
SUFFIXES = ('.npz', '.safetensors')


def flat_arrays(params: PyTree, model_state: PyTree = None) -> dict[str, np.ndarray]:
  """{'params/<leaf path>': array, 'model_state/<leaf path>': array}."""
  arrays = {f'params/{p}': np.asarray(x) for p, x in tree_lib.leaves_with_paths(params)}
  arrays.update({f'model_state/{p}': np.asarray(x)
                 for p, x in tree_lib.leaves_with_paths(model_state or {})})
  return arrays


def write_npz(path, params: PyTree, model_state: PyTree = None) -> pathlib.Path:
  """params (and model state) as an .npz keyed 'params/<leaf path>' (and
  'model_state/<leaf path>'): what `load_weights` reads back."""
  path = pathlib.Path(path)
  np.savez(path, **flat_arrays(params, model_state))
  return path


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
  path = pathlib.Path(path)
  if path.suffix == '.npz':
    np.savez(path, **arrays)
  elif path.suffix == '.safetensors':
    save_safetensors(path, arrays, {'format': content})
  else:
    raise ckpt_lib.CheckpointError(
        f'{path}: weights are written as .npz or .safetensors, chosen by the suffix; '
        f"{path.suffix or 'no suffix'!r} is neither")
  return path


def save_safetensors(path, arrays: dict[str, Any], metadata: dict[str, str]) -> pathlib.Path:
  """Writes {key: array} as safetensors (numpy, no torch) with `metadata`
  plus 'sparsejax_version' in the header. Arrays are made C-contiguous
  first: safetensors' numpy writer copies the raw buffer, so a transposed
  view would be stored in the wrong order. A dtype safetensors has no code
  for is a CheckpointError naming the key."""
  save_file = safetensors_io._require('safetensors.numpy').save_file
  import safetensors
  import sparsejax
  flat = {}
  for k, x in arrays.items():
    x = np.asarray(x)
    flat[k] = np.array(x, order='C', copy=True) if x.ndim == 0 else np.ascontiguousarray(x)
  path = pathlib.Path(path)
  try:
    save_file(flat, str(path), metadata={**metadata, 'sparsejax_version': sparsejax.__version__})
  except (safetensors.SafetensorError, ValueError, TypeError) as e:
    bad = [k for k, x in flat.items() if f'"{x.dtype.name}"' in str(e)]
    what = f'{bad[0]!r} ({flat[bad[0]].dtype})' if bad else 'these arrays'
    raise ckpt_lib.CheckpointError(f'{path}: safetensors cannot store {what}: '
                                   f"{str(e).split('. ')[0]}; write .npz instead") from None
  return path


def safetensors_metadata(path) -> dict[str, str]:
  """The header metadata of a .safetensors file ({} when it has none)."""
  safe_open = safetensors_io._require('safetensors').safe_open
  with safe_open(str(path), 'np') as f:
    return dict(f.metadata() or {})


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
  return tree_lib.map_with_path(lambda p, x: _typed(np.asarray(norm[p]), x), abstract)


def _typed(a: np.ndarray, like) -> np.ndarray:
  """`a`, or for raw bytes of the leaf's width (np.savez writes bfloat16 as
  void 'V2') those bytes viewed as the leaf's dtype, so .npz round-trips
  bfloat16 bitwise as .safetensors does."""
  dtype = getattr(like, 'dtype', None)
  if a.dtype.kind == 'V' and dtype is not None and np.dtype(dtype).itemsize == a.dtype.itemsize:
    return a.view(np.dtype(dtype))
  return a
