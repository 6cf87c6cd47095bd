"""A BERT encoder in Flax Linen, laid out to load pretrained checkpoints.

The architecture is BERT's (Devlin et al. 2019): word + position + token-type
embeddings and a LayerNorm, then post-LN layers (self-attention, residual,
LayerNorm; GELU MLP, residual, LayerNorm). GELU is the exact erf form, as in
BERT, so pretrained weights reproduce the original activations. Every weight
matrix is a plain 2-D leaf, so masks and row selection treat it like any
other: `embeddings/word/embedding`, `layer_0/attention/query/kernel`,
`layer_0/attention/out/kernel`, `layer_0/norm_0/scale`,
`layer_0/mlp/fc_in/kernel`, `layer_0/mlp/fc_out/kernel`, `layer_0/norm_1/scale`
and, with a classifier head, `output/kernel`.

The pooled output is the mean of the last hidden states over non-padding
tokens, which is how sentence-transformers' all-MiniLM-L6-v2 (Reimers &
Gurevych 2019) forms its sentence embedding; that model then L2-normalises it
(`normalize=True` here, or `l2_normalize`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD_ID = 0   # [PAD] in the BERT uncased vocabulary
POOLINGS = ('mean', 'cls', 'none')
_INIT = nn.initializers.truncated_normal(stddev=0.02)   # BERT's initializer_range


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) over the last axis (what sentence-transformers'
  Normalize module does to the pooled embedding)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=_INIT, name=name)


class Embeddings(nn.Module):
  """Word + learned position + token-type embeddings, LayerNorm, dropout."""
  vocab_size: int
  hidden: int
  max_len: int
  type_vocab: int
  dropout: float
  layer_norm_eps: float

  @nn.compact
  def __call__(self, tokens, token_type_ids, train):
    t = tokens.shape[1]
    if t > self.max_len:
      raise ValueError(f'sequence length {t} exceeds max_len={self.max_len}')
    embed = lambda n, name: nn.Embed(n, self.hidden, embedding_init=_INIT, name=name)
    x = embed(self.vocab_size, 'word')(tokens)
    x = x + embed(self.max_len, 'position')(jnp.arange(t))[None, :, :]
    x = x + embed(self.type_vocab, 'token_type')(token_type_ids)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm')(x)
    return nn.Dropout(self.dropout, deterministic=not train)(x)


class SelfAttention(nn.Module):
  """Multi-head self-attention with `query`, `key`, `value` and `out` Dense
  layers; keys where `mask` is False get no weight."""
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, train):
    b, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'hidden={d} is not divisible by num_heads={self.num_heads}')
    head_dim = d // self.num_heads
    split = lambda y: y.reshape(b, t, self.num_heads, head_dim)
    q = split(_dense(d, 'query')(x))
    k = split(_dense(d, 'key')(x))
    v = split(_dense(d, 'value')(x))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * (head_dim ** -0.5)
    # A large finite negative (not -inf) keeps a row of all-padding finite.
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    y = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, t, d)
    return _dense(d, 'out')(y)


class Mlp(nn.Module):
  """Dense `fc_in` (hidden -> intermediate), exact GELU, Dense `fc_out`."""
  intermediate: int

  @nn.compact
  def __call__(self, x):
    h = nn.gelu(_dense(self.intermediate, 'fc_in')(x), approximate=False)
    return _dense(x.shape[-1], 'fc_out')(h)


class Layer(nn.Module):
  """One post-LN BERT layer: norm_0(x + attention(x)), norm_1(x + mlp(x))."""
  num_heads: int
  intermediate: int
  dropout: float
  layer_norm_eps: float

  @nn.compact
  def __call__(self, x, mask, train):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = SelfAttention(self.num_heads, self.dropout, name='attention')(x, mask, train)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm_0')(x + drop(h))
    h = Mlp(self.intermediate, name='mlp')(x)
    return nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm_1')(x + drop(h))


class BertEncoder(nn.Module):
  """BERT encoder: int tokens (B, T) -> pooled embedding (B, hidden), or
  logits (B, num_classes) from a Dense `output` on the pooled embedding.

  Token id 0 is padding: the attention mask is `tokens != 0` unless an
  explicit `attention_mask` (B, T) is passed. `pooling` is 'mean' (over
  non-padding tokens), 'cls' (the first token) or 'none' (the hidden states
  (B, T, hidden), or per-token logits). `normalize` L2-normalises the pooled
  embedding (sentence-transformers' embeddings); it needs num_classes=None.
  Defaults are all-MiniLM-L6-v2's sizes.
  """
  vocab_size: int = 30522
  hidden: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate: int = 1536
  max_len: int = 512
  type_vocab: int = 2
  dropout: float = 0.0
  layer_norm_eps: float = 1e-12
  num_classes: int | None = None
  pooling: str = 'mean'
  normalize: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False, *,
               attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f'expected int tokens (B, T); got {tokens.dtype} {tokens.shape}')
    if self.pooling not in POOLINGS:
      raise ValueError(f'pooling must be one of {POOLINGS}, got {self.pooling!r}')
    if self.normalize and self.num_classes is not None:
      raise ValueError('normalize=True applies to embeddings; use num_classes=None')
    mask = tokens != PAD_ID if attention_mask is None else attention_mask.astype(bool)
    if mask.shape != tokens.shape:
      raise ValueError(f'attention_mask shape {mask.shape} != tokens shape {tokens.shape}')
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(tokens)
    x = Embeddings(self.vocab_size, self.hidden, self.max_len, self.type_vocab,
                   self.dropout, self.layer_norm_eps, name='embeddings')(
                       tokens, token_type_ids, train)
    for i in range(self.num_layers):
      x = Layer(self.num_heads, self.intermediate, self.dropout, self.layer_norm_eps,
                name=f'layer_{i}')(x, mask, train)
    if self.pooling == 'mean':
      w = mask.astype(x.dtype)[:, :, None]
      x = jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-9)
    elif self.pooling == 'cls':
      x = x[:, 0, :]
    if self.num_classes is not None:
      return nn.Dense(self.num_classes, name='output')(x)
    return l2_normalize(x) if self.normalize else x
