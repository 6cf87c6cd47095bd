"""A Llama-family decoder in Flax Linen, laid out to load pretrained checkpoints.

The architecture is Llama's (Touvron et al. 2023): pre-norm blocks with
RMSNorm (Zhang & Sennrich 2019), rotary position embeddings (RoPE: Su et al.
2021), grouped-query attention (GQA: Ainslie et al. 2023; plain multi-head
when num_kv_heads == num_heads) and a SwiGLU MLP (Shazeer 2020), then a final
RMSNorm and an LM head that is the transposed embedding (tied) or its own
matrix. Switches cover the close relatives: q/k/v biases (Qwen2), a sliding
attention window (Mistral), linear and llama3 RoPE scaling (Chen et al. 2023;
Llama 3.1). Numerics follow Hugging Face's PyTorch Llama (RMSNorm in float32,
rotate-half RoPE, softmax in float32), so its checkpoints reproduce its logits.

Every weight matrix is a plain 2-D leaf, prunable by the default rule:
`embed/embedding`, `block_0/attention/{query,key,value,out}/kernel`,
`block_0/mlp/{gate,up,down}/kernel`, `block_0/norm_0/scale`,
`block_0/norm_1/scale`, `norm/scale` and, untied, `output/kernel`. Exclude
the embedding (the head too, when tied) with `PrunableRule(exclude='^embed/')`.

`pool='last'` (with `pad_id`) returns only the logits after each row's last
real token, (B, vocab): the LM as a classifier by likelihood, with the same
params (`sparsejax.data.kjv_books`).

Decoding uses an explicit KV cache pytree passed in and returned (no mutable
Flax collection): `init_cache` makes one, and
`logits, cache = model.apply(variables, tokens, cache=cache)` writes the
keys/values of `tokens` at `cache['index']` and attends to everything cached
so far. All rows of a batch share one position (no left padding).
`greedy_decode` is a jitted loop built on it. `MESH_RULES` splits the
matrices Megatron-style over the 'model' mesh axis (Shoeybi et al. 2019).

RoPE, RMSNorm and the SwiGLU MLP, the layers that need no `LlamaConfig`,
are in `llama_layers` (re-exported here).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models.llama_layers import _INIT, MLP, RMSNorm, apply_rope, rope_inv_freq

POOLS = ('all', 'last')

# (regex over leaf paths, partition spec): column-parallel q/k/v/gate/up,
# row-parallel out/down, embedding split over the vocabulary. For
# `sparsejax.train.sharding.param_shardings` (the `mesh.rules` setting).
MESH_RULES = (
    (r'attention/(query|key|value)/kernel$', (None, 'model')),
    (r'attention/(query|key|value)/bias$', ('model',)),
    (r'mlp/(gate|up)/kernel$', (None, 'model')),
    (r'(attention/out|mlp/down)/kernel$', ('model', None)),
    (r'^embed/embedding$', ('model', None)),
    (r'^output/kernel$', (None, 'model')),
)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """The architecture of a Llama-family checkpoint (what config.json or GGUF
  metadata say); `module()` builds the `Llama` that runs it. Field names are
  `Llama`'s settings."""
  vocab_size: int = 256
  hidden: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  intermediate: int = 128
  head_dim: int | None = None          # None: hidden // num_heads
  max_len: int = 2048                  # the context length it was trained for
  rms_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: str | None = None      # None, 'linear' or 'llama3'
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0    # llama3 only
  rope_high_freq_factor: float = 4.0   # llama3 only
  rope_original_max_len: int = 8192    # llama3 only
  tie_embeddings: bool = True
  qkv_bias: bool = False               # Qwen2; Llama's attention_bias sets out_bias too
  out_bias: bool = False
  mlp_bias: bool = False
  sliding_window: int | None = None    # Mistral

  def __post_init__(self):   # one spelling per architecture, so configs compare equal
    if self.head_dim is None:
      object.__setattr__(self, 'head_dim', self.hidden // self.num_heads)

  def module(self, *, dtype: Any = jnp.float32, remat: bool = False) -> 'Llama':
    """The `Llama` of this architecture, computing in `dtype` (params stay
    float32) and with `remat` per block."""
    return Llama(**dataclasses.asdict(self), dtype=dtype, remat=remat)


class Attention(nn.Module):
  """Grouped-query causal self-attention with RoPE; `num_heads` query heads
  share `num_kv_heads` key/value heads in groups (Ainslie et al. 2023)."""
  config: LlamaConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, cache=None):
    c = self.config
    b, t, d = x.shape
    h, kv, hd = c.num_heads, c.num_kv_heads, c.head_dim
    if h % kv:
      raise ValueError(f'num_heads={h} is not a multiple of num_kv_heads={kv}')
    dense = lambda n, bias, name: nn.Dense(n, use_bias=bias, kernel_init=_INIT,
                                           dtype=self.dtype, name=name)
    q = dense(h * hd, c.qkv_bias, 'query')(x).reshape(b, t, h, hd)
    k = dense(kv * hd, c.qkv_bias, 'key')(x).reshape(b, t, kv, hd)
    v = dense(kv * hd, c.qkv_bias, 'value')(x).reshape(b, t, kv, hd)
    inv_freq = rope_inv_freq(hd, c.rope_theta, c.rope_scaling, c.rope_factor,
                             c.rope_low_freq_factor, c.rope_high_freq_factor,
                             c.rope_original_max_len)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    key_pos = positions
    if cache is not None:   # write at positions[0], attend to the whole buffer
      start = (0, positions[0], 0, 0)
      k = jax.lax.dynamic_update_slice(cache['key'], k.astype(cache['key'].dtype), start)
      v = jax.lax.dynamic_update_slice(cache['value'], v.astype(cache['value'].dtype), start)
      cache = {'key': k, 'value': v}
      k, v = k.astype(self.dtype), v.astype(self.dtype)
      key_pos = jnp.arange(k.shape[1], dtype=positions.dtype)
    allowed = key_pos[None, :] <= positions[:, None]                     # (T, S)
    if c.sliding_window is not None:
      allowed &= positions[:, None] - key_pos[None, :] < c.sliding_window
    q = q.reshape(b, t, kv, h // kv, hd)
    logits = jnp.einsum('btkgd,bskd->bkgts', q, k) * jnp.asarray(hd ** -0.5, q.dtype)
    logits = jnp.where(allowed[None, None, None], logits.astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    y = jnp.einsum('bkgts,bskd->btkgd', weights, v).reshape(b, t, h * hd)
    return dense(d, c.out_bias, 'out')(y), cache


class Block(nn.Module):
  """x + attention(norm_0(x)), then x + mlp(norm_1(x)); returns (x, cache)."""
  config: LlamaConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, cache=None):
    c = self.config
    h, cache = Attention(c, self.dtype, name='attention')(
        RMSNorm(c.rms_eps, self.dtype, name='norm_0')(x), positions, cache)
    x = x + h
    x = x + MLP(c.intermediate, c.mlp_bias, self.dtype, name='mlp')(
        RMSNorm(c.rms_eps, self.dtype, name='norm_1')(x))
    return x, cache


class Llama(nn.Module):
  """A Llama-family causal LM: int tokens (B, T) -> float32 logits (B, T,
  vocab_size); with `cache` (from `init_cache`), returns (logits, cache).

  The settings are `LlamaConfig`'s fields plus `dtype`, the compute dtype
  (params stay float32; norms, RoPE angles and softmax run in float32), and
  `remat`, which recomputes each block's activations in the backward pass
  (`nn.remat`, Chen et al. 2016) without changing params or their paths.
  `train` is accepted for the common interface; Llama has no dropout.

  `pool='last'` makes it a classifier over the vocabulary: logits (B,
  vocab_size) at each row's last token that is not `pad_id` (rows padded on
  the right), i.e. the next-token distribution after a prompt, for
  classification by likelihood (the label is the answer's first token). The
  head runs at that one position only; attention is causal, so padding after
  it changes nothing, and the params and their paths are those of 'all'
  (pretrained weights and PEFT targets carry over). A row of padding only
  reads position 0.
  """
  vocab_size: int = 256
  hidden: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  intermediate: int = 128
  head_dim: int | None = None
  max_len: int = 2048
  rms_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: str | None = None
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  tie_embeddings: bool = True
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  sliding_window: int | None = None
  dtype: Any = jnp.float32
  remat: bool = False
  pool: str = 'all'        # 'all': (B, T, vocab) logits; 'last': (B, vocab), see above
  pad_id: int = 0          # pool='last': the padding token

  @property
  def config(self) -> LlamaConfig:
    return LlamaConfig(**{f.name: getattr(self, f.name)
                          for f in dataclasses.fields(LlamaConfig)})

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False, cache: dict | None = None):
    del train
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f'expected int tokens (B, T); got {tokens.dtype} {tokens.shape}')
    if self.pool not in POOLS:
      raise ValueError(f'Llama pool={self.pool!r}: choose one of {POOLS}')
    if self.pool == 'last' and cache is not None:
      raise ValueError("Llama pool='last' classifies whole prompts; decode with pool='all'")
    c = self.config
    start = jnp.zeros((), jnp.int32) if cache is None else cache['index']
    positions = start + jnp.arange(tokens.shape[1], dtype=jnp.int32)
    embed = nn.Embed(c.vocab_size, c.hidden, embedding_init=_INIT, dtype=self.dtype,
                     name='embed')
    x = embed(tokens)
    block = nn.remat(Block) if self.remat else Block
    new_cache = {}
    for i in range(c.num_layers):
      name = f'block_{i}'
      x, layer_cache = block(c, self.dtype, name=name)(
          x, positions, None if cache is None else cache[name])
      new_cache[name] = layer_cache
    if self.pool == 'last':
      x = jnp.take_along_axis(x, last_token(tokens, self.pad_id)[:, None, None], axis=1)[:, 0]
    x = RMSNorm(c.rms_eps, self.dtype, name='norm')(x)
    if c.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(c.vocab_size, use_bias=False, kernel_init=_INIT, dtype=self.dtype,
                        name='output')(x)
    logits = logits.astype(jnp.float32)
    if cache is None:
      return logits
    new_cache['index'] = start + tokens.shape[1]
    return logits, new_cache


def last_token(tokens: jax.Array, pad_id: int) -> jax.Array:
  """(B,) int32: the index of each row's last token that is not `pad_id`
  (0 for a row of padding only)."""
  index = jnp.arange(tokens.shape[1], dtype=jnp.int32)
  return jnp.max(jnp.where(tokens != pad_id, index, 0), axis=1)


def init_cache(model: Llama, batch: int, length: int, dtype: Any = None) -> dict:
  """An empty KV cache for `batch` rows of up to `length` positions:
  {'block_i': {'key', 'value'}: zeros (batch, length, num_kv_heads,
  head_dim) in `dtype` (default the model's), 'index': int32 0}. Writing past
  `length` is not checked (dynamic_update_slice clamps), so size it for the
  prompt plus every generated token."""
  c = model.config
  head_dim = c.head_dim
  dtype = model.dtype if dtype is None else dtype
  zeros = lambda: jnp.zeros((batch, length, c.num_kv_heads, head_dim), dtype)
  cache = {f'block_{i}': {'key': zeros(), 'value': zeros()} for i in range(c.num_layers)}
  cache['index'] = jnp.zeros((), jnp.int32)
  return cache


def greedy_decode(model: Llama, params, prompt: jax.Array, steps: int):
  """(tokens (B, steps), logits (B, steps, vocab)): the argmax continuation of
  `prompt` (B, T), one cached step at a time; logits[:, j] is the
  distribution token j was drawn from. Pure; jit it with `model` and `steps`
  static."""
  b, t = prompt.shape
  cache = init_cache(model, b, t + steps)
  logits, cache = model.apply({'params': params}, prompt, cache=cache)
  first = logits[:, -1]

  def step(carry, _):
    last, cache = carry
    token = jnp.argmax(last, axis=-1).astype(prompt.dtype)
    logits, cache = model.apply({'params': params}, token[:, None], cache=cache)
    return (logits[:, -1], cache), (token, last)

  _, (tokens, dists) = jax.lax.scan(step, (first, cache), None, length=steps)
  return tokens.T, jnp.swapaxes(dists, 0, 1)
