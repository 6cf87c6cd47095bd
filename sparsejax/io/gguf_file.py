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
import struct
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


# GGUF value types (llama.cpp's gguf.md): numeric ones as numpy dtypes.
_NUMERIC = {0: '<u1', 1: '<i1', 2: '<u2', 3: '<i2', 4: '<u4', 5: '<i4', 6: '<f4', 7: '<u1',
            10: '<u8', 11: '<i8', 12: '<f8'}
_STRING, _ARRAY, _BOOL = 8, 9, 7


def read_header(path) -> tuple[dict[str, Any], list[str]]:
  """(metadata, tensor names) of the GGUF file at `path`, read from its
  header only: the same values as `gguf_metadata(open_gguf(path))` and the
  reader's tensor names (a test checks it on SmolLM2). `gguf.GGUFReader`
  builds every field as memory-mapped views, 9 s for SmolLM2's 49,152-token
  vocabulary on the 2-core CI machine; reading the header sequentially takes
  a fraction of a second, and configs and tokenizers need nothing else."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no GGUF file at {path}')
  with open(path, 'rb') as f:
    data = memoryview(f.read(min(path.stat().st_size, 1 << 26)))   # headers are a few MB
  if bytes(data[:4]) != b'GGUF':
    raise ValueError(f'{path} is not a GGUF file')
  version, n_tensors, n_kv = struct.unpack_from('<IQQ', data, 4)
  if not 2 <= version <= 3:
    raise ValueError(f'{path}: GGUF version {version} is not supported (2 or 3)')
  pos = 24

  def string():
    nonlocal pos
    (n,) = struct.unpack_from('<Q', data, pos)
    pos += 8 + n
    return bytes(data[pos - n:pos]).decode('utf-8')

  def value(kind):
    nonlocal pos
    if kind == _STRING:
      return string()
    if kind == _ARRAY:
      elem, count = struct.unpack_from('<IQ', data, pos)
      pos += 12
      if elem == _STRING:
        return [string() for _ in range(count)]
      if elem == _ARRAY:
        return [value(_ARRAY) for _ in range(count)]
      dtype = np.dtype(_NUMERIC[elem])
      out = np.frombuffer(data, dtype, count, pos)
      pos += count * dtype.itemsize
      return [bool(x) for x in out] if elem == _BOOL else out.tolist()
    dtype = np.dtype(_NUMERIC[kind])
    out = np.frombuffer(data, dtype, 1, pos)[0]
    pos += dtype.itemsize
    return bool(out) if kind == _BOOL else out.item()

  meta = {'GGUF.version': version, 'GGUF.tensor_count': n_tensors, 'GGUF.kv_count': n_kv}
  for _ in range(n_kv):
    key = string()
    (kind,) = struct.unpack_from('<I', data, pos)
    pos += 4
    meta[key] = value(kind)
  names = []
  for _ in range(n_tensors):
    names.append(string())
    (n_dims,) = struct.unpack_from('<I', data, pos)
    pos += 4 + 8 * n_dims + 4 + 8      # dims, type, offset
  return meta, names


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
