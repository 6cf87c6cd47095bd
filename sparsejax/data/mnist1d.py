"""MNIST-1D (Greydanus & Kobak 2020), generated locally and cached.

`mnist1d.data.make_dataset(get_dataset_args())` reproduces the paper's frozen
dataset (4000 train / 1000 test sequences of length 40) without a download.
Generation takes a few seconds, so the arrays are cached as .npz.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np


def cache_dir() -> pathlib.Path:
  root = os.environ.get('SPARSEJAX_DATA') or os.path.join(
      os.path.expanduser('~'), '.cache', 'sparsejax')
  return pathlib.Path(root)


def generate() -> dict[str, np.ndarray]:
  """Build the default MNIST-1D split with the `mnist1d` package."""
  try:
    from mnist1d.data import get_dataset_args, make_dataset
  except ImportError as e:
    raise RuntimeError("MNIST-1D needs the 'mnist1d' package: pip install 'sparsejax[data]' "
                       'or pip install mnist1d') from e
  saved = np.random.get_state()   # the generator reseeds numpy's global RNG
  try:
    data = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(saved)
  return {'x_train': np.asarray(data['x'], np.float32),
          'y_train': np.asarray(data['y'], np.int32),
          'x_test': np.asarray(data['x_test'], np.float32),
          'y_test': np.asarray(data['y_test'], np.int32)}


def load(cache: bool = True) -> dict[str, np.ndarray]:
  """{'x_train' (4000, 40), 'y_train', 'x_test' (1000, 40), 'y_test'}, cached."""
  path = cache_dir() / 'mnist1d_default.npz'
  if cache and path.exists():
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  data = generate()
  if cache:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp.npz')
    np.savez(tmp, **data)
    os.replace(tmp, path)
  return data
