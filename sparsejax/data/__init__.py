"""Datasets (the training stack's data layer).

`load_dataset(name, **options)` returns a `Dataset` of numpy `Source`s;
`TrainBatches` and `eval_batches` turn a split into batches. Loaders live in
the plain dict `LOADERS` (no registration at import time); each is a function
of keyword options only, so the options a loader accepts are its signature.
"""

from __future__ import annotations

import inspect

from sparsejax.core.imports import UnknownName, did_you_mean, resolve
from sparsejax.data import (corpus, files, kjv_books, mnist, mnist1d, stdlib_topics, text,
                            tfds_source)
from sparsejax.data.base import (ArraySource, DataError, Dataset, Source, TrainBatches,
                                 batch_indices, cache_dir, eval_batches, steps_per_epoch)

LOADERS = {
    'mnist1d': mnist1d.dataset,
    'mnist': mnist.dataset,
    'tfds': tfds_source.dataset,
    'idx': files.idx_dataset,
    'npz': files.npz_dataset,
    'text': text.dataset,
    'stdlib_topics': stdlib_topics.dataset,
    'corpus': corpus.dataset,
    'kjv_books': kjv_books.dataset,
}

__all__ = ['ArraySource', 'DataError', 'Dataset', 'LOADERS', 'Source', 'TrainBatches',
           'batch_indices', 'cache_dir', 'eval_batches', 'load_dataset', 'loader',
           'loader_options', 'steps_per_epoch']


def loader(name: str):
  """The loader of a dataset name (`LOADERS`) or of an import path
  'pkg.module:function'; an unknown name is a DataError listing the names."""
  try:
    return resolve(name, LOADERS, 'dataset')
  except UnknownName as e:
    raise DataError(f'unknown dataset {name!r}; choose one of {", ".join(LOADERS)}'
                    f"{did_you_mean(e.near)} or give an import path 'pkg.module:function'"
                    ) from None


def loader_options(name: str) -> dict[str, object]:
  """{option: default} of loader `name`; required options map to
  inspect.Parameter.empty (a loader's *args and **kwargs are left out)."""
  return {p.name: p.default for p in inspect.signature(loader(name)).parameters.values()
          if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def load_dataset(name: str, **options) -> Dataset:
  """Load dataset `name` (a name of LOADERS or an import path) with a loader's
  options, e.g. load_dataset('mnist', split='60k/10k') or
  load_dataset('idx', path='~/mnist')."""
  accepted = loader_options(name)
  fn = loader(name)
  takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
  unknown = [] if takes_any else sorted(set(options) - set(accepted))
  if unknown:
    raise DataError(f'unknown option(s) {", ".join(map(repr, unknown))} for dataset '
                    f'{name!r}; its options are: {", ".join(accepted) or "none"}')
  missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
  if missing:
    raise DataError(f'dataset {name!r} needs option(s) {", ".join(missing)}')
  return fn(**options)
