"""Any tensorflow-datasets dataset through `tfds.data_source` (no TensorFlow).

`tfds.data_source` gives random access to a prepared dataset stored as
array_record (or parquet) files; `tfds.load` would need TensorFlow. Nothing is
downloaded here (download=False): a dataset that is not prepared in data_dir is
a DataError saying how to prepare it.

in_memory=True reads a split into numpy once (right for MNIST/CIFAR sizes);
in_memory=False reads each batch from the files through the data source's
`__getitems__` (or `__getitem__`), for splits that do not fit in memory.
"""

from __future__ import annotations

import numpy as np

from sparsejax.data.base import ArraySource, Batch, DataError, Dataset, images_to_float32

CHUNK = 1024   # examples per read when copying a split into memory


class TfdsSource:
  """One split of a tfds data source (any sequence of example dicts) as a
  `Source`: reads the records for a batch and stacks them."""

  def __init__(self, records, image_key: str = 'image', label_key: str = 'label'):
    self.records, self.image_key, self.label_key = records, image_key, label_key

  def __len__(self) -> int:
    return len(self.records)

  def get(self, indices: np.ndarray) -> Batch:
    keys = [int(i) for i in np.asarray(indices).reshape(-1)]
    getitems = getattr(self.records, '__getitems__', None)
    examples = getitems(keys) if getitems is not None else [self.records[k] for k in keys]
    try:
      x = np.stack([np.asarray(e[self.image_key]) for e in examples])
      y = np.asarray([e[self.label_key] for e in examples], np.int32)
    except KeyError as e:
      found = sorted(examples[0]) if examples else []
      raise DataError(f'tfds examples have no key {e}; keys found: {found}') from None
    return images_to_float32(x), y

  def to_memory(self) -> ArraySource:
    """The whole split as in-memory arrays, read CHUNK examples at a time."""
    n, xs, ys = len(self), [], []
    for start in range(0, n, CHUNK):
      x, y = self.get(np.arange(start, min(start + CHUNK, n)))
      xs.append(x)
      ys.append(y)
    if not xs:
      raise DataError(f'tfds split {self.records!r} is empty')
    return ArraySource(np.concatenate(xs), np.concatenate(ys))


def _not_found(tfds_name: str, data_dir, looked_in: str, cause: str) -> DataError:
  where = data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets (the default)'
  return DataError(
      f'tfds dataset {tfds_name!r} is not prepared in {looked_in} (data_dir: {where}); '
      f'nothing is downloaded at run time. Prepare it on a machine with network with '
      f'`tfds build {tfds_name} --file_format=array_record` (data_source needs array_record '
      'files, not the default tfrecord), then copy the prepared directory '
      f'<data_dir>/{tfds_name.split(":")[0].split("/")[0]}/ here, or pass data_dir= the '
      f'directory that holds it. ({cause})')


def _open_split(tfds, tfds_name: str, split: str, data_dir):
  """tfds.data_source for one split, with tfds' errors turned into DataErrors
  that say what was looked for and how to get it."""
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    first = str(e).splitlines()[0]
    raise DataError(f'{first} (tfds_name={tfds_name!r}; see tfds.list_builders('
                    'with_community_datasets=False) for the names)') from None
  except Exception as e:   # tfds raises KeyError, NotImplementedError, ... here
    cause = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    try:
      builder = tfds.builder(tfds_name, data_dir=data_dir)
      prepared, looked_in = builder.is_prepared(), str(builder.data_dir)
    except Exception:   # pylint: disable=broad-except
      prepared, looked_in = False, str(data_dir)
    if not prepared:
      raise _not_found(tfds_name, data_dir, looked_in, cause) from e
    raise DataError(f'tfds dataset {tfds_name!r} is prepared in {looked_in} but split '
                    f'{split!r} could not be opened: {cause}. A split must exist, and '
                    'data_source needs array_record files (prepare with '
                    '--file_format=array_record)') from e


def dataset(*, tfds_name: str, data_dir=None, train_split: str = 'train',
            test_split: str = 'test', validation_split: str | None = None,
            image_key: str = 'image', label_key: str = 'label',
            in_memory: bool = True) -> Dataset:
  """The `tfds` loader: images uint8 -> float32 / 255; num_classes from the
  label feature, input_shape from the image feature of the builder info."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError("the 'tfds' loader needs tensorflow-datasets: pip install "
                    "'sparsejax[data]' (TensorFlow itself is not needed)") from e
  data_dir = None if data_dir is None else str(data_dir)
  names = {'train': train_split, 'test': test_split, 'validation': validation_split}
  opened = {k: _open_split(tfds, tfds_name, s, data_dir) for k, s in names.items() if s}
  features = opened['train'].dataset_info.features
  for key in (image_key, label_key):
    if key not in features:
      raise DataError(f'tfds dataset {tfds_name!r} has no feature {key!r}; features: '
                      f'{sorted(features.keys())} (set image_key= / label_key=)')
  shape = tuple(features[image_key].shape)
  if any(d is None for d in shape):
    raise DataError(f'tfds dataset {tfds_name!r}: feature {image_key!r} has shape {shape}; '
                    'only fixed-shape inputs can be batched')
  num_classes = getattr(features[label_key], 'num_classes', None)
  if num_classes is None:
    raise DataError(f'tfds dataset {tfds_name!r}: feature {label_key!r} is not a ClassLabel '
                    f'({type(features[label_key]).__name__}), so its number of classes is unknown')
  sources = {k: TfdsSource(ds, image_key, label_key) for k, ds in opened.items()}
  if in_memory:
    sources = {k: s.to_memory() for k, s in sources.items()}
  return Dataset(name=f'tfds:{tfds_name}', train=sources['train'], test=sources['test'],
                 validation=sources.get('validation'), num_classes=num_classes,
                 input_shape=shape, input_dtype=np.float32)
