"""Small pre-LayerNorm Transformers: an encoder classifier and a causal LM.

The blocks follow Vaswani et al. 2017 with the LayerNorm moved in front of
each sub-layer (pre-LN, Xiong et al. 2020), as in GPT-2. Attention is written
out with four Dense layers (`query`, `key`, `value`, `out`), each a plain
(d_model, d_model) matrix, so every projection can be pruned like any other
weight matrix. Parameter paths read e.g. `block_0/attention/query/kernel`,
`block_0/mlp/fc_in/kernel`, `block_0/norm_0/scale`, `output/kernel`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_EMBED_INIT = nn.initializers.normal(stddev=0.02)


class Attention(nn.Module):
  """Multi-head self-attention; `causal` lets position t see only <= t."""
  num_heads: int
  causal: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'd_model={d} is not divisible by num_heads={self.num_heads}')
    head_dim = d // self.num_heads
    split = lambda y: y.reshape(b, t, self.num_heads, head_dim)
    q = split(nn.Dense(d, name='query')(x))
    k = split(nn.Dense(d, name='key')(x))
    v = split(nn.Dense(d, name='value')(x))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * (head_dim ** -0.5)
    if self.causal:
      allowed = jnp.tril(jnp.ones((t, t), dtype=bool))[None, None, :, :]
      logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if self.dropout > 0.0:
      weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    y = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, t, d)
    return nn.Dense(d, name='out')(y)


class FeedForward(nn.Module):
  """Dense `fc_in` (d_model -> mlp_dim), GELU (tanh form), Dense `fc_out` back."""
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.gelu(nn.Dense(self.mlp_dim, name='fc_in')(x))
    return nn.Dense(x.shape[-1], name='fc_out')(h)


class Block(nn.Module):
  """x + attention(norm_0(x)), then x + mlp(norm_1(x)); dropout on each branch."""
  num_heads: int
  mlp_dim: int
  causal: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    drop = lambda y: (nn.Dropout(self.dropout, deterministic=not train)(y)
                      if self.dropout > 0.0 else y)
    h = Attention(self.num_heads, self.causal, self.dropout, name='attention')(
        nn.LayerNorm(name='norm_0')(x), train=train)
    x = x + drop(h)
    h = FeedForward(self.mlp_dim, name='mlp')(nn.LayerNorm(name='norm_1')(x))
    return x + drop(h)


def _blocks(x, *, num_layers, num_heads, mlp_dim, causal, dropout, train, remat=False):
  """Positions are added by the caller; returns the final-LayerNormed states.
  With `remat`, each block's activations are recomputed in the backward pass
  instead of stored (`nn.remat`, gradient checkpointing: Chen et al. 2016);
  the params and their paths are unchanged."""
  if dropout > 0.0:
    x = nn.Dropout(dropout, deterministic=not train)(x)
  block = nn.remat(Block, static_argnums=(2,)) if remat else Block   # self, x, train
  for i in range(num_layers):
    x = block(num_heads, mlp_dim, causal, dropout, name=f'block_{i}')(x, train)
  return nn.LayerNorm(name='norm')(x)


def _add_positions(x: jax.Array, max_len: int) -> jax.Array:
  t, d = x.shape[1], x.shape[2]
  if t > max_len:
    raise ValueError(f'sequence length {t} exceeds max_len={max_len}')
  pos = nn.Embed(max_len, d, embedding_init=_EMBED_INIT, name='pos_embed')(
      jnp.arange(t))
  return x + pos[None, :, :].astype(x.dtype)


class TransformerEncoder(nn.Module):
  """A pre-LN Transformer encoder classifier (Vaswani et al. 2017; Xiong et
  al. 2020): embed, learned positions, blocks, final LayerNorm, mean pooling
  over the sequence, `output`.

  With `vocab_size=None` the input is a float sequence (B, T) or (B, T, F),
  projected to d_model by a Dense named `embed`; with an int it is int tokens
  (B, T) looked up in an nn.Embed named `embed`. There is no padding mask:
  every position is attended to and pooled.
  """
  vocab_size: int | None = None
  max_len: int = 512
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  mlp_dim: int = 128
  dropout: float = 0.0
  num_classes: int = 10
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.vocab_size is None:
      if x.ndim == 2:
        x = x[:, :, None]
      if x.ndim != 3:
        raise ValueError(f'expected a float sequence (B, T) or (B, T, F); got {x.shape}')
      x = nn.Dense(self.d_model, name='embed')(x)
    else:
      if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f'expected int tokens (B, T); got {x.dtype} {x.shape}')
      x = nn.Embed(self.vocab_size, self.d_model, embedding_init=_EMBED_INIT,
                   name='embed')(x)
    x = _add_positions(x, self.max_len)
    x = _blocks(x, num_layers=self.num_layers, num_heads=self.num_heads,
                mlp_dim=self.mlp_dim, causal=False, dropout=self.dropout, train=train,
                remat=self.remat)
    return nn.Dense(self.num_classes, name='output')(jnp.mean(x, axis=1))


class TransformerDecoder(nn.Module):
  """A small causal (GPT-style, pre-LN) language model: int tokens (B, T) ->
  next-token logits (B, T, vocab_size).

  Same blocks as the encoder with a causal mask. The LM head `output` is its
  own matrix (no weight tying with `embed`), so it is pruned like any other.
  """
  vocab_size: int = 256
  max_len: int = 512
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  mlp_dim: int = 128
  dropout: float = 0.0
  remat: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f'expected int tokens (B, T); got {tokens.dtype} {tokens.shape}')
    x = nn.Embed(self.vocab_size, self.d_model, embedding_init=_EMBED_INIT,
                 name='embed')(tokens)
    x = _add_positions(x, self.max_len)
    x = _blocks(x, num_layers=self.num_layers, num_heads=self.num_heads,
                mlp_dim=self.mlp_dim, causal=True, dropout=self.dropout, train=train,
                remat=self.remat)
    return nn.Dense(self.vocab_size, name='output')(x)
