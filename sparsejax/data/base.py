"""The data interface: splits as random-access sources, and batching.

A `Source` is one split with random access (`get(indices) -> (x, y)`); a
`Dataset` bundles the splits with what a model needs to know (classes, input
shape and dtype, task). Batching is a pure function of (seed, step), so a run
resumed at step k sees exactly the batches it would have seen: the iterator's
position is the global step and needs no state of its own in a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import queue
import threading
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np

TASKS = ('classification', 'lm')
Batch = tuple[np.ndarray, np.ndarray]


class DataError(ValueError):
  """Missing or malformed data; the message says what was looked for and how
  to get it."""


@runtime_checkable
class Source(Protocol):
  """Random access to one split."""

  def __len__(self) -> int: ...

  def get(self, indices: np.ndarray) -> Batch:
    """(x, y) numpy arrays for `indices`, in that order."""
    ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """A split held as in-memory numpy arrays; `get` is a single gather."""
  x: np.ndarray
  y: np.ndarray
  shuffle: bool = True     # False: train batches take the stored order every epoch

  def __post_init__(self):
    if not isinstance(self.x, np.ndarray) or not isinstance(self.y, np.ndarray):
      raise DataError(f'ArraySource needs numpy arrays, got {type(self.x).__name__} '
                      f'and {type(self.y).__name__}')
    if self.x.ndim == 0 or self.y.ndim == 0 or len(self.x) != len(self.y):
      raise DataError(f'x and y must have the same length, got shapes {self.x.shape} '
                      f'and {self.y.shape}')

  def __len__(self) -> int:
    return len(self.x)

  def get(self, indices: np.ndarray) -> Batch:
    return self.x[indices], self.y[indices]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """The splits of one dataset and what a model needs to know about them."""
  name: str
  train: Source
  test: Source
  validation: Source | None
  num_classes: int                 # classes, or vocabulary size for 'lm'
  input_shape: tuple[int, ...]     # shape of one x example
  input_dtype: np.dtype            # float32 for images/signals, int32 for tokens
  task: str = 'classification'     # or 'lm' (y has the shape of x)

  def __post_init__(self):
    if self.task not in TASKS:
      raise DataError(f'task must be one of {TASKS}, got {self.task!r}')
    object.__setattr__(self, 'input_shape', tuple(int(d) for d in self.input_shape))
    object.__setattr__(self, 'input_dtype', np.dtype(self.input_dtype))
    object.__setattr__(self, 'num_classes', int(self.num_classes))


def cache_dir() -> pathlib.Path:
  """Where decoded datasets are cached: $SPARSEJAX_DATA or ~/.cache/sparsejax."""
  root = os.environ.get('SPARSEJAX_DATA') or os.path.join(
      os.path.expanduser('~'), '.cache', 'sparsejax')
  return pathlib.Path(root)


def save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
  """Write a cache file atomically (a crash or a parallel writer never leaves
  a half-written file under the final name)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz')
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def images_to_float32(x: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [0, 1] (x / 255); other dtypes cast to float32.

  Every loader uses this one function, so the same images read through
  different loaders give bit-identical arrays."""
  if x.dtype == np.uint8:
    return np.divide(x, np.float32(255), dtype=np.float32)
  return x.astype(np.float32, copy=False)


def holdout(x: np.ndarray, y: np.ndarray, n: int) -> tuple[ArraySource, ArraySource | None]:
  """(train, validation) with the last `n` examples held out (views, no copy)."""
  n = int(n)
  if not 0 <= n < len(x):
    raise DataError(f'validation must be in [0, {len(x)}) for {len(x)} training '
                    f'examples, got {n}')
  if n == 0:
    return ArraySource(x, y), None
  return ArraySource(x[:-n], y[:-n]), ArraySource(x[-n:], y[-n:])


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped); an error if none."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if n // batch_size == 0:
    raise ValueError(f'batch_size {batch_size} is larger than the split ({n} examples)')
  return n // batch_size


@functools.lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The (read-only) order of the examples in `epoch`; batches are its slices.
  Without `shuffle` it is the stored order (the MNIST-1D notebook's batches)."""
  perm = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
  perm.flags.writeable = False
  return perm


def batch_indices(n: int, batch_size: int, seed: int, step: int,
                  shuffle: bool = True) -> np.ndarray:
  """Indices of train batch `step`: a slice of a permutation drawn from
  (seed, epoch). Depends only on (n, batch_size, seed, step)."""
  if seed < 0 or step < 0:
    raise ValueError(f'seed and step must be >= 0, got seed={seed}, step={step}')
  spe = steps_per_epoch(n, batch_size)
  epoch, i = divmod(int(step), spe)
  perm = epoch_permutation(int(n), int(seed), epoch, bool(shuffle))
  return perm[i * batch_size:(i + 1) * batch_size].copy()


def _produce(source, batch_size, seed, step, transform, out: queue.Queue,
             stop: threading.Event) -> None:
  """The prefetch thread: make batches from `step` on until stopped. It holds
  no reference to the TrainBatches object, so dropping that object closes it."""
  n, shuffle = len(source), getattr(source, 'shuffle', True)
  while not stop.is_set():
    try:
      x, y = source.get(batch_indices(n, batch_size, seed, step, shuffle))
      item = ('batch', transform(x, y) if transform else (x, y))
    except BaseException as e:  # handed to the consumer, raised there
      item = ('error', e)
    while not stop.is_set():
      try:
        out.put(item, timeout=0.05)
        break
      except queue.Full:
        pass
    if item[0] == 'error':
      return
    step += 1


class TrainBatches:
  """Endless iterator over (x, y) train batches, starting at `start_step`.

  Batch k is `source.get(batch_indices(len(source), batch_size, seed, k))`,
  passed through `transform(x, y)` if given. With `prefetch` > 0 a background
  thread makes (and transforms) that many batches ahead; `close()` (or leaving
  the `with` block) stops and joins it.
  """

  def __init__(self, source: Source, batch_size: int, seed: int, start_step: int = 0,
               prefetch: int = 2, transform: Callable[[np.ndarray, np.ndarray], Batch] | None = None):
    if start_step < 0 or prefetch < 0:
      raise ValueError(f'start_step and prefetch must be >= 0, got {start_step}, {prefetch}')
    self._source, self._batch_size, self._seed = source, int(batch_size), int(seed)
    self._transform = transform
    self._steps_per_epoch = steps_per_epoch(len(source), self._batch_size)
    self._position = int(start_step)
    self._closed = False
    self._stop = threading.Event()
    self._queue: queue.Queue | None = None
    self._thread: threading.Thread | None = None
    if prefetch:
      self._queue = queue.Queue(maxsize=prefetch)
      self._thread = threading.Thread(
          target=_produce, name='sparsejax-prefetch', daemon=True,
          args=(source, self._batch_size, self._seed, self._position, transform,
                self._queue, self._stop))
      self._thread.start()

  @property
  def position(self) -> int:
    """The step of the next batch."""
    return self._position

  @property
  def steps_per_epoch(self) -> int:
    return self._steps_per_epoch

  def __iter__(self) -> 'TrainBatches':
    return self

  def __next__(self) -> Batch:
    if self._closed:
      raise StopIteration
    if self._queue is None:
      idx = batch_indices(len(self._source), self._batch_size, self._seed, self._position)
      x, y = self._source.get(idx)
      batch = self._transform(x, y) if self._transform else (x, y)
    else:
      kind, batch = self._queue.get()
      if kind == 'error':
        self.close()
        raise batch
    self._position += 1
    return batch

  def close(self) -> None:
    """Stop the prefetch thread and wait for it; further `next` calls stop."""
    self._closed = True
    self._stop.set()
    if self._thread is not None:
      while self._thread.is_alive():
        try:   # unblock a producer waiting on a full queue
          self._queue.get_nowait()
        except queue.Empty:
          pass
        self._thread.join(timeout=0.05)
      self._thread = None

  def __enter__(self) -> 'TrainBatches':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):   # a dropped iterator stops its thread (which holds no ref to it)
    stop = getattr(self, '_stop', None)
    if stop is not None:
      stop.set()


def eval_batches(source: Source, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Sequential (x, y, weight) batches over a whole split, all of size
  `batch_size`: the last is padded by repeating the last example, with weight
  0.0 for padding and 1.0 otherwise, so a jitted eval step sees one shape and
  sum(weight * metric) counts every example exactly once."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  n = len(source)
  for start in range(0, n, batch_size):
    count = min(batch_size, n - start)
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    weight = (np.arange(batch_size) < count).astype(np.float32)
    x, y = source.get(idx)
    yield x, y, weight
