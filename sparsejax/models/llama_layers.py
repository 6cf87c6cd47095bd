"""The layers of `llama.Llama` that need no `LlamaConfig`: rotary position
embeddings, RMSNorm and the SwiGLU MLP.

RoPE (Su et al. 2021) with the scalings of the close relatives (linear
position interpolation, Chen et al. 2023; Llama 3.1's band-wise rescaling),
RMSNorm (Zhang & Sennrich 2019) and the gated MLP (Shazeer 2020), with the
numerics of Hugging Face's PyTorch Llama (norm and RoPE angles in float32,
rotate-half layout). `llama` builds the attention, the block and the model
from them and re-exports every name here.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_INIT = nn.initializers.normal(stddev=0.02)   # Llama's initializer_range


def rope_inv_freq(head_dim: int, theta: float, scaling: str | None = None,
                  factor: float = 1.0, low_freq_factor: float = 1.0,
                  high_freq_factor: float = 4.0, original_max_len: int = 8192) -> jax.Array:
  """RoPE's inverse frequencies theta^(-2i/d), i < d/2, float32 (Su et al.
  2021), with linear position interpolation (divide by `factor`: Chen et al.
  2023) or Llama 3.1's band-wise rescaling, as in Hugging Face's
  `_compute_llama3_parameters`."""
  inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if scaling is None or scaling == 'default':
    return inv
  if scaling == 'linear':
    return inv / factor
  if scaling != 'llama3':
    raise ValueError(f"rope_scaling {scaling!r} is not supported (None, 'linear', 'llama3')")
  low_wavelen = original_max_len / low_freq_factor
  high_wavelen = original_max_len / high_freq_factor
  wavelen = 2 * math.pi / inv
  scaled = jnp.where(wavelen > low_wavelen, inv / factor, inv)
  smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotate x (B, T, heads, D) by its positions (T,), rotate-half layout: the
  pair of dimension i is i + D/2 (Hugging Face's; GGUF's interleaved q/k rows
  are un-permuted on load). Angles in float32, result in x's dtype."""
  angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]   # (T, D/2)
  angles = jnp.concatenate([angles, angles], axis=-1)[None, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


class RMSNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) in float32, cast back, times `scale` (Zhang &
  Sennrich 2019; Hugging Face's LlamaRMSNorm)."""
  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    scale = scale.astype(self.dtype).reshape((1,) * (x.ndim - 1) + (-1,))
    return y.astype(self.dtype) * scale


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)) (Shazeer 2020)."""
  intermediate: int
  bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda n, name: nn.Dense(n, use_bias=self.bias, kernel_init=_INIT,
                                     dtype=self.dtype, name=name)
    h = nn.silu(dense(self.intermediate, 'gate')(x)) * dense(self.intermediate, 'up')(x)
    return dense(x.shape[-1], 'down')(h)
