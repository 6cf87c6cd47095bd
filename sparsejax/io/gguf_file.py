"""llama.cpp's GGUF files (llama architecture): the metadata, and every
tensor dequantized to float32 with the `gguf` package, renamed to Hugging
Face's Llama names, with the q/k rows llama.cpp permutes for its interleaved
rotary layout put back in rotate-half order (the inverse of
convert_hf_to_gguf.py's `permute`, as transformers does). What the metadata
means for a model (`LlamaConfig`) is `sparsejax.models.llama_weights`'
business; the tokenizer in it is `tokenizer_files.gguf_tokenizer`'s.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from sparsejax.io.assets import require

_GGUF_BLOCK = {'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm',
               'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj',
               'attn_v': 'self_attn.v_proj', 'attn_output': 'self_attn.o_proj',
               'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj', 'ffn_down': 'mlp.down_proj'}
_GGUF_TOP = {'token_embd': 'model.embed_tokens', 'output_norm': 'model.norm',
             'output': 'lm_head'}


def open_gguf(path):
  """A `gguf.GGUFReader` of the file at `path` (FileNotFoundError if none)."""
  gguf = require('gguf')
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no GGUF file at {path}')
  return gguf.GGUFReader(str(path))


def gguf_metadata(reader) -> dict[str, Any]:
  """{key: value} of a `gguf.GGUFReader`'s fields (arrays as lists)."""
  return {k: f.contents() for k, f in reader.fields.items()}


def gguf_hf_name(name: str) -> str:
  """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'."""
  parts = name.split('.')
  if parts[0] == 'blk' and len(parts) == 4 and parts[2] in _GGUF_BLOCK:
    return f'model.layers.{parts[1]}.{_GGUF_BLOCK[parts[2]]}.{parts[3]}'
  if len(parts) == 2 and parts[0] in _GGUF_TOP:
    return f'{_GGUF_TOP[parts[0]]}.{parts[1]}'
  raise ValueError(f'GGUF tensor {name!r} has no Llama counterpart')


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undo llama.cpp's q/k row permutation (convert_hf_to_gguf.py `permute`:
  per head, rows (2, D/2) -> (D/2, 2), interleaving RoPE pairs) so rows are
  in rotate-half order again. Works for weights (rows, in) and biases."""
  return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def hf_tensors(reader, num_heads: int, num_kv_heads: int) -> dict[str, np.ndarray]:
  """{Hugging Face key: float32 array} of every tensor of a GGUF reader:
  dequantized, renamed (`gguf_hf_name`), q/k rows un-permuted for
  `num_heads` / `num_kv_heads` heads."""
  gguf = require('gguf')
  flat = {}
  for t in reader.tensors:
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    w = np.asarray(w, np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))
    name = gguf_hf_name(t.name)
    if '.q_proj.' in name:
      w = unpermute_rope_rows(w, num_heads)
    elif '.k_proj.' in name:
      w = unpermute_rope_rows(w, num_kv_heads)
    flat[name] = w
  return flat
