"""Datasets from local files: a directory of IDX files (the MNIST file format,
as distributed for MNIST, Fashion-MNIST, KMNIST, EMNIST) and a .npz file.

These are the ways to bring your own data to a machine without network: copy
the files, point a loader at them.
"""

from __future__ import annotations

import gzip
import pathlib
import zipfile

import numpy as np

from sparsejax.data.base import ArraySource, DataError, Dataset, holdout, images_to_float32

# IDX: 2 zero bytes, a dtype code, the number of dims, then big-endian uint32
# dims and big-endian data (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS").
IDX_DTYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'), 0x0B: np.dtype('>i2'),
              0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}
IDX_FILES = {'x_train': 'train-images-idx3-ubyte', 'y_train': 'train-labels-idx1-ubyte',
             'x_test': 't10k-images-idx3-ubyte', 'y_test': 't10k-labels-idx1-ubyte'}


def parse_idx(data: bytes, name: str = '<bytes>') -> np.ndarray:
  """An IDX file's bytes as a numpy array in native byte order; DataError
  naming `name` if the header or the length is wrong."""
  if len(data) < 4:
    raise DataError(f'{name}: truncated IDX file ({len(data)} bytes, no header)')
  if data[0] != 0 or data[1] != 0:
    raise DataError(f'{name}: bad magic number 0x{data[:4].hex()} (an IDX file starts '
                    'with two zero bytes, a dtype code and the number of dimensions)')
  code, ndim = data[2], data[3]
  if code not in IDX_DTYPES:
    raise DataError(f'{name}: bad magic number 0x{data[:4].hex()}: unknown dtype code '
                    f'0x{code:02x} (known: {", ".join(f"0x{c:02x}" for c in IDX_DTYPES)})')
  if ndim == 0:
    raise DataError(f'{name}: bad magic number 0x{data[:4].hex()}: zero dimensions')
  start = 4 + 4 * ndim
  if len(data) < start:
    raise DataError(f'{name}: truncated IDX header ({len(data)} bytes, {ndim} dims need {start})')
  dims = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, 4))
  dtype = IDX_DTYPES[code]
  expected = start + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    what = 'truncated data' if len(data) < expected else 'trailing bytes after the data'
    raise DataError(f'{name}: {what}: dims {dims} of {dtype.name} need {expected} bytes, '
                    f'the file has {len(data)}')
  arr = np.frombuffer(data, dtype, offset=start).reshape(dims)
  return arr.astype(dtype.newbyteorder('='), copy=False)


def read_idx(path) -> np.ndarray:
  """Read one IDX file (gzipped if its name ends in .gz)."""
  path = pathlib.Path(path)
  try:
    if path.suffix == '.gz':
      with gzip.open(path, 'rb') as f:
        data = f.read()
    else:
      data = path.read_bytes()
  except (OSError, EOFError) as e:   # gzip.BadGzipFile is an OSError
    raise DataError(f'{path}: cannot read: {e}') from e
  return parse_idx(data, str(path))


def _find_idx(root: pathlib.Path, stem: str) -> pathlib.Path | None:
  # Some copies spell 'train-images-idx3-ubyte' as 'train-images.idx3-ubyte'.
  for name in (stem, stem.replace('-idx', '.idx')):
    for candidate in (root / name, root / f'{name}.gz'):
      if candidate.is_file():
        return candidate
  return None


def idx_dataset(*, path, validation: int = 0) -> Dataset:
  """The `idx` loader: the four MNIST-format files in directory `path`.

  uint8 images become float32 / 255 with a channel axis, (N, H, W, 1);
  `validation` holds out the last N training examples; num_classes is the
  largest label + 1."""
  root = pathlib.Path(path).expanduser()
  found = {key: _find_idx(root, stem) for key, stem in IDX_FILES.items()}
  missing = [IDX_FILES[k] for k, p in found.items() if p is None]
  if missing:
    raise DataError(
        f'IDX directory {root} lacks {", ".join(missing)} (each optionally .gz; looked for '
        f'{", ".join(IDX_FILES.values())}). Copy the four MNIST-format files there '
        "(e.g. MNIST or Fashion-MNIST from a machine with network), or use load_dataset('mnist').")
  arrays = {k: read_idx(p) for k, p in found.items()}
  for split in ('train', 'test'):
    x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
    xp, yp = found[f'x_{split}'], found[f'y_{split}']
    if y.ndim != 1 or x.ndim not in (3, 4):
      raise DataError(f'{xp}, {yp}: expected images (N, H, W[, C]) and labels (N,), '
                      f'got {x.shape} and {y.shape}')
    if len(x) != len(y):
      raise DataError(f'count mismatch: {xp} has {len(x)} images but {yp} has {len(y)} labels')
    arrays[f'x_{split}'] = images_to_float32(x if x.ndim == 4 else x[..., None])
    arrays[f'y_{split}'] = y.astype(np.int32)
  if arrays['x_train'].shape[1:] != arrays['x_test'].shape[1:]:
    raise DataError(f'{root}: train images {arrays["x_train"].shape[1:]} and test images '
                    f'{arrays["x_test"].shape[1:]} differ in shape')
  train, val = holdout(arrays['x_train'], arrays['y_train'], validation)
  labels = np.concatenate([arrays['y_train'], arrays['y_test']])
  return Dataset(name=f'idx:{root.name}', train=train, validation=val,
                 test=ArraySource(arrays['x_test'], arrays['y_test']),
                 num_classes=int(labels.max()) + 1 if labels.size else 0,
                 input_shape=arrays['x_train'].shape[1:], input_dtype=np.float32)


NPZ_REQUIRED = ('x_train', 'y_train', 'x_test', 'y_test')


def _inputs(x: np.ndarray) -> np.ndarray:
  # uint8 pixels -> float32 / 255; floats -> float32; other integers (tokens,
  # categorical features) -> int32.
  if x.dtype == np.uint8 or x.dtype.kind == 'f':
    return images_to_float32(x)
  if x.dtype.kind in 'iub':
    return x.astype(np.int32)
  raise DataError(f'unsupported input dtype {x.dtype}')


def npz_dataset(*, path, num_classes: int | None = None) -> Dataset:
  """The `npz` loader: arrays x_train, y_train, x_test, y_test (and optionally
  x_val, y_val) in one .npz file. num_classes defaults to the largest label + 1."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise DataError(f'no .npz file at {path}; it must hold arrays {", ".join(NPZ_REQUIRED)} '
                    '(and optionally x_val, y_val), e.g. written with np.savez')
  try:
    with np.load(path, allow_pickle=False) as f:
      keys = sorted(f.files)
      missing = [k for k in NPZ_REQUIRED if k not in keys]
      if ('x_val' in keys) != ('y_val' in keys):
        missing.append('y_val' if 'x_val' in keys else 'x_val')
      if missing:
        raise DataError(f'{path} lacks arrays {", ".join(missing)} (found: '
                        f'{", ".join(keys) or "none"}); needed: {", ".join(NPZ_REQUIRED)}, '
                        'optionally x_val and y_val')
      arrays = {k: f[k] for k in keys if k[:2] in ('x_', 'y_')}
  except DataError:
    raise
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f'{path}: not a readable .npz file: {e}') from e
  splits = {}
  for split in ('train', 'val', 'test'):
    if f'x_{split}' in arrays:
      y = arrays[f'y_{split}']
      if y.ndim != 1 or y.dtype.kind not in 'iu':
        raise DataError(f'{path}: y_{split} must be 1-D integer labels, got {y.dtype} {y.shape}')
      try:
        splits[split] = ArraySource(_inputs(arrays[f'x_{split}']), y.astype(np.int32))
      except DataError as e:
        raise DataError(f'{path}: x_{split}/y_{split}: {e}') from None
  if num_classes is None:
    labels = np.concatenate([s.y for s in splits.values()])
    num_classes = int(labels.max()) + 1 if labels.size else 0
  x = splits['train'].x
  return Dataset(name=f'npz:{path.stem}', train=splits['train'], test=splits['test'],
                 validation=splits.get('val'), num_classes=num_classes,
                 input_shape=x.shape[1:], input_dtype=x.dtype)
