"""Byte-level language-model data (task 'lm', vocabulary 256).

A corpus of bytes is cut into non-overlapping windows of seq_len + 1 bytes;
an example is x = window[:-1], y = window[1:] (next-byte targets). The last
`test_fraction` of the windows is the test split (a contiguous tail, so test
text is not interleaved with training text).

Without a path, the corpus is the docstrings of a fixed list of standard-
library modules and their public classes and functions: text that exists
offline on every machine. It depends on the Python version (and a little on
the platform, e.g. which `os` functions exist), so compare numbers only
across runs on the same Python.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pathlib
import warnings

import numpy as np

from sparsejax.data.base import ArraySource, DataError, Dataset

VOCAB = 256
STDLIB_MODULES = (
    'abc', 'argparse', 'bisect', 'collections', 'contextlib', 'copy', 'csv',
    'dataclasses', 'datetime', 'decimal', 'enum', 'fractions', 'functools',
    'heapq', 'inspect', 'io', 'itertools', 'json', 'logging', 'math',
    'operator', 'os', 'pathlib', 'pickle', 'random', 're', 'shutil', 'statistics',
    'string', 'textwrap', 'threading', 'typing', 'unittest', 'zipfile')


@functools.lru_cache(maxsize=1)
def stdlib_corpus() -> bytes:
  """Docstrings of STDLIB_MODULES, each module followed by its public classes
  and functions in sorted order, as UTF-8."""
  parts = []
  with warnings.catch_warnings():   # e.g. typing.io's DeprecationWarning on access
    warnings.simplefilter('ignore')
    for name in STDLIB_MODULES:
      _module_docs(name, parts)
  return ''.join(parts).encode('utf-8')


def _module_docs(name: str, parts: list[str]) -> None:
  module = importlib.import_module(name)
  parts.append(f'# {name}\n\n{inspect.getdoc(module) or ""}\n\n')
  for attr in sorted(a for a in dir(module) if not a.startswith('_')):
    member = getattr(module, attr, None)
    if not (inspect.isclass(member) or inspect.isroutine(member)):
      continue   # constants and submodules: their "docs" are their types'
    doc = inspect.getdoc(member)
    if doc:
      parts.append(f'## {name}.{attr}\n\n{doc}\n\n')


def windows(corpus: bytes, seq_len: int) -> np.ndarray:
  """Non-overlapping (seq_len + 1)-byte windows as int32, (n, seq_len + 1)."""
  w = seq_len + 1
  n = len(corpus) // w
  return np.frombuffer(corpus, np.uint8, n * w).reshape(n, w).astype(np.int32)


def dataset(*, path=None, seq_len: int = 64, test_fraction: float = 0.1) -> Dataset:
  """The `text` loader: x, y int32 (seq_len,), y = x shifted by one byte."""
  if int(seq_len) != seq_len or seq_len < 1:
    raise DataError(f'seq_len must be a positive integer, got {seq_len!r}')
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f'test_fraction must be in (0, 1), got {test_fraction!r}')
  if path is None:
    corpus, name = stdlib_corpus(), 'text:stdlib-docstrings'
  else:
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
      raise DataError(f'no text file at {p}; pass path= a file (read as raw bytes), or '
                      'path=None for the built-in corpus of standard-library docstrings')
    corpus, name = p.read_bytes(), f'text:{p.name}'
  win = windows(corpus, int(seq_len))
  n_test = int(round(len(win) * test_fraction))
  if n_test < 1 or len(win) - n_test < 1:
    raise DataError(f'{name}: {len(corpus)} bytes make {len(win)} windows of '
                    f'{seq_len + 1} bytes, too few for train and test at '
                    f'test_fraction={test_fraction}; use a larger corpus or smaller seq_len')
  x, y = win[:, :-1], win[:, 1:]   # views into one int32 array
  cut = len(win) - n_test
  return Dataset(name=name, train=ArraySource(x[:cut], y[:cut]),
                 test=ArraySource(x[cut:], y[cut:]), validation=None,
                 num_classes=VOCAB, input_shape=(int(seq_len),),
                 input_dtype=np.int32, task='lm')
