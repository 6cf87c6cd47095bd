"""Flat {key: array} files and the one key convention.

A key is a leaf's path joined by '/' ('hidden_0/kernel'), after a section
prefix where a file has sections: a weights file holds 'params/<leaf>' and
'model_state/<leaf>' (a pruned export adds 'masks/<leaf>'); a PEFT delta
holds 'rows/<leaf>', 'lora_a/<leaf>', ...; an export's compact leaves add
'#<part>' ('<leaf>#data'). `flatten` and `unflatten` are
`flax.traverse_util`'s flatten_dict / unflatten_dict with sep='/', the
leaves in jax's order (keys sorted level by level), so a file's keys come
out in the order `jax.tree.leaves` gives.

Files: .npz (numpy) or .safetensors (numpy, no torch), chosen by the suffix.
Both round-trip bitwise, bfloat16 included: safetensors stores ml_dtypes'
bfloat16 as BF16; np.savez stores it as 2-byte void, so `write_arrays` and
`write_npz` add a key '__dtypes__' (JSON {key: dtype name}) that
`read_arrays` uses to view those bytes back and then drops (files written
before it: `typed` views them as the leaf they are read into). A .safetensors header holds the metadata the writer gives
(`safetensors_metadata` reads it back): `sparsejax.train.weights` records
{'format': ..., 'sparsejax_version': ...}; Hugging Face folders {'format': 'pt'}.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sparsejax.io.assets import MINILM_INSTALL_HINT, require

PyTree = Any
SEP = '/'
SECTIONS = ('params/', 'model_state/', 'masks/')   # key prefixes of a weights file
SUFFIXES = ('.npz', '.safetensors')
DTYPES_KEY = '__dtypes__'   # .npz: {key: dtype name} of arrays np.savez keeps as raw bytes


class WeightsFileError(ValueError):
  """A file that cannot be written as asked; the message names the file."""


# --- the key convention ----------------------------------------------------------------

def _plain(tree):
  """Nested dicts of `tree`: any Mapping (FrozenDict, nnx.State) as a dict, a
  list or tuple as {index: item} (jax's order and '/'-joined paths)."""
  if isinstance(tree, Mapping):
    return {k: _plain(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    items = tree._asdict().items() if hasattr(tree, '_asdict') else enumerate(tree)
    return {k: _plain(v) for k, v in items}
  return tree


def flatten(tree: PyTree, prefix: str = '') -> dict[str, Any]:
  """{prefix + 'a/b/c': leaf} of a tree of mappings, in jax's leaf order;
  None leaves and empty mappings are left out, as jax leaves them out."""
  flat = traverse_util.flatten_dict(_plain({} if tree is None else tree))
  return {prefix + SEP.join(map(str, k)): v
          for k, v in sorted(flat.items(), key=lambda kv: kv[0]) if v is not None}


def unflatten(flat: Mapping[str, Any], prefix: str = '') -> dict:
  """The nested dict of {'a/b/c': leaf} (the keys under `prefix`, stripped of it)."""
  return traverse_util.unflatten_dict(dict(section(flat, prefix)), sep=SEP)


def section(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """{key without `prefix`: value} of the keys that start with `prefix`."""
  return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def flat_arrays(params: PyTree, model_state: PyTree = None) -> dict[str, np.ndarray]:
  """{'params/<leaf path>': array, 'model_state/<leaf path>': array}."""
  arrays = {k: np.asarray(x) for k, x in flatten(params, 'params/').items()}
  arrays.update({k: np.asarray(x) for k, x in flatten(model_state, 'model_state/').items()})
  return arrays


def typed(a: np.ndarray, like) -> np.ndarray:
  """`a`, or for raw bytes of the leaf's width (np.savez writes bfloat16 as
  void 'V2') those bytes viewed as `like`'s dtype, so .npz round-trips
  bfloat16 bitwise as .safetensors does."""
  dtype = getattr(like, 'dtype', None)
  if a.dtype.kind == 'V' and dtype is not None and np.dtype(dtype).itemsize == a.dtype.itemsize:
    return a.view(np.dtype(dtype))
  return a


# --- files -----------------------------------------------------------------------------

def read_arrays(path) -> dict[str, np.ndarray]:
  """{key: array} of an .npz or .safetensors file (any other suffix is read
  as safetensors)."""
  path = pathlib.Path(path)
  if path.suffix != '.npz':
    return load_safetensors(path)
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  names = json.loads(str(arrays.pop(DTYPES_KEY))) if DTYPES_KEY in arrays else {}
  return {k: a.view(_named_dtype(names[k])) if k in names else a for k, a in arrays.items()}


def _named_dtype(name: str) -> np.dtype:
  """A dtype by name, ml_dtypes' ('bfloat16', 'float8_e4m3fn', ...) included."""
  return np.dtype(jnp.dtype(name))


def _savez(path: pathlib.Path, arrays: Mapping[str, Any]) -> None:
  """np.savez, plus DTYPES_KEY naming the arrays it stores as raw bytes
  (ml_dtypes' bfloat16, float8, int4: dtype kind 'V')."""
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  if DTYPES_KEY in arrays:
    raise WeightsFileError(f'{path}: the key {DTYPES_KEY!r} is reserved for the dtypes')
  raw = {k: a.dtype.name for k, a in arrays.items() if a.dtype.kind == 'V'}
  if raw:
    arrays[DTYPES_KEY] = np.array(json.dumps(raw, sort_keys=True))
  np.savez(path, **arrays)


def write_arrays(path, arrays: dict[str, Any], metadata: dict[str, str] | None = None
                 ) -> pathlib.Path:
  """{key: array} to the .npz or .safetensors `path` (by its suffix), a
  .safetensors header holding `metadata`. Another suffix is a
  WeightsFileError naming both. Returns the path."""
  path = pathlib.Path(path)
  if path.suffix == '.npz':
    _savez(path, arrays)
  elif path.suffix == '.safetensors':
    save_safetensors(path, arrays, metadata or {})
  else:
    raise WeightsFileError(
        f'{path}: weights are written as .npz or .safetensors, chosen by the suffix; '
        f"{path.suffix or 'no suffix'!r} is neither")
  return path


def write_npz(path, params: PyTree, model_state: PyTree = None) -> pathlib.Path:
  """params (and model state) as an .npz keyed 'params/<leaf path>' (and
  'model_state/<leaf path>')."""
  path = pathlib.Path(path)
  _savez(path, flat_arrays(params, model_state))
  return path


def load_safetensors(path) -> dict[str, np.ndarray]:
  """{key: numpy array} of a safetensors file (numpy only, no torch)."""
  load_file = require('safetensors.numpy', MINILM_INSTALL_HINT).load_file
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no safetensors file at {path}')
  return load_file(str(path))


def save_safetensors(path, arrays: dict[str, Any], metadata: dict[str, str]) -> pathlib.Path:
  """Writes {key: array} as safetensors (numpy, no torch) with `metadata` in
  the header. Arrays are made C-contiguous
  first: safetensors' numpy writer copies the raw buffer, so a transposed
  view would be stored in the wrong order. A dtype safetensors has no code
  for is a WeightsFileError naming the key."""
  save_file = require('safetensors.numpy', MINILM_INSTALL_HINT).save_file
  import safetensors
  flat = {}
  for k, x in arrays.items():
    x = np.asarray(x)
    flat[k] = np.array(x, order='C', copy=True) if x.ndim == 0 else np.ascontiguousarray(x)
  path = pathlib.Path(path)
  try:
    save_file(flat, str(path), metadata=dict(metadata))
  except (safetensors.SafetensorError, ValueError, TypeError) as e:
    bad = [k for k, x in flat.items() if f'"{x.dtype.name}"' in str(e)]
    what = f'{bad[0]!r} ({flat[bad[0]].dtype})' if bad else 'these arrays'
    raise WeightsFileError(f'{path}: safetensors cannot store {what}: '
                           f"{str(e).split('. ')[0]}; write .npz instead") from None
  return path


def safetensors_metadata(path) -> dict[str, str]:
  """The header metadata of a .safetensors file ({} when it has none)."""
  safe_open = require('safetensors', MINILM_INSTALL_HINT).safe_open
  with safe_open(str(path), 'np') as f:
    return dict(f.metadata() or {})
