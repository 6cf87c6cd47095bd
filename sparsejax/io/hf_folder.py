"""Hugging Face model folders: config.json, and the weights as
model.safetensors or as shards that model.safetensors.index.json lists,
keyed by Hugging Face's names ('model.layers.0.self_attn.q_proj.weight').
Which names a model has, and how they map onto its leaves, is the model's
business (`sparsejax.models.llama_weights.hf_mapping`,
`safetensors_io.bert_mapping`).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from sparsejax.io.arrays import load_safetensors, save_safetensors

CONFIG, WEIGHTS, INDEX = 'config.json', 'model.safetensors', 'model.safetensors.index.json'


def read_config(folder) -> dict:
  """The folder's config.json as a dict."""
  return json.loads((pathlib.Path(folder) / CONFIG).read_text())


def read_hf_weights(folder) -> dict[str, np.ndarray]:
  """{key: array} of model.safetensors, or of every shard that
  model.safetensors.index.json's weight_map names."""
  folder = pathlib.Path(folder)
  index = folder / INDEX
  if (folder / WEIGHTS).is_file():
    return load_safetensors(folder / WEIGHTS)
  if not index.is_file():
    raise FileNotFoundError(f'no {WEIGHTS} or {INDEX} in {folder}')
  flat = {}
  for shard in sorted(set(json.loads(index.read_text())['weight_map'].values())):
    flat.update(load_safetensors(folder / shard))
  return flat


def write_hf_folder(folder, flat: dict[str, np.ndarray], config: dict,
                    tokenizer=None) -> pathlib.Path:
  """Writes model.safetensors ({Hugging Face key: array}, header {'format':
  'pt'}) and config.json to `folder` (made if missing), and tokenizer.json
  when a `tokenizers.Tokenizer` is given. Returns the folder."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  save_safetensors(folder / WEIGHTS, flat, {'format': 'pt'})
  (folder / CONFIG).write_text(json.dumps(config, indent=2) + '\n')
  if tokenizer is not None:
    tokenizer.save(str(folder / 'tokenizer.json'))
  return folder
