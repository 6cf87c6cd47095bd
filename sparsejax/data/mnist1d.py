"""MNIST-1D (Greydanus & Kobak 2020), generated locally and cached.

`mnist1d.data.make_dataset(get_dataset_args())` reproduces the paper's frozen
dataset (4000 train / 1000 test sequences of length 40) without a download.
Generation takes a few seconds, so the arrays are cached as .npz.
"""

from __future__ import annotations

import numpy as np

from sparsejax.data.base import ArraySource, DataError, Dataset, cache_dir, holdout, save_npz

__all__ = ['cache_dir', 'generate', 'load', 'dataset']


def generate() -> dict[str, np.ndarray]:
  """Build the default MNIST-1D split with the `mnist1d` package."""
  try:
    from mnist1d.data import get_dataset_args, make_dataset
  except ImportError as e:
    raise DataError("MNIST-1D needs the 'mnist1d' package: pip install 'sparsejax[data]' "
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
    save_npz(path, data)
  return data


def dataset(*, validation: int = 0) -> Dataset:
  """The `mnist1d` loader: x float32 (40,), 10 classes; `validation` holds
  out the last N training examples."""
  data = load()
  train, val = holdout(data['x_train'], data['y_train'], validation)
  return Dataset(name='mnist1d', train=train, validation=val,
                 test=ArraySource(data['x_test'], data['y_test']),
                 num_classes=10, input_shape=data['x_train'].shape[1:],
                 input_dtype=np.float32)
