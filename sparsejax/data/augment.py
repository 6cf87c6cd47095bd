"""Image augmentation on the device: random crops of zero-padded images and
random horizontal flips (the CIFAR recipe of He et al. 2016), for batches of
shape (batch, height, width, channels). Pure functions of a key, which the
train step draws from (seed, step), so a resumed run augments exactly as an
uninterrupted one."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def random_crop(x: jax.Array, key: jax.Array, padding: int) -> jax.Array:
  """Each image padded by `padding` zeros on every side, then cropped back to
  its size at a random offset."""
  if x.ndim != 4:
    raise ValueError(f'random_crop needs (batch, height, width, channels) images, got {x.shape}')
  n, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

  def one(img, off):
    return lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
  return jax.vmap(one)(padded, offsets)


def random_flip(x: jax.Array, key: jax.Array) -> jax.Array:
  """Each image mirrored left-right with probability 1/2."""
  if x.ndim != 4:
    raise ValueError(f'random_flip needs (batch, height, width, channels) images, got {x.shape}')
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def make_augment(crop_padding: int = 0, flip: bool = False) -> Callable | None:
  """augment(x, key) -> x with the chosen transforms, or None for none."""
  if not crop_padding and not flip:
    return None

  def augment(x, key):
    crop_key, flip_key = jax.random.split(key)
    if crop_padding:
      x = random_crop(x, crop_key, crop_padding)
    if flip:
      x = random_flip(x, flip_key)
    return x
  return augment
