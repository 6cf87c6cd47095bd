"""Convolutional classifiers for CIFAR-sized images (NHWC).

Conv-2/4/6 from Frankle & Carbin 2019 ("The Lottery Ticket Hypothesis") and
the CIFAR ResNet-20 of He et al. 2016. Inputs are (B, H, W, C); a (B, H, W)
batch gets a channel axis. Layers are named `conv_0`, `conv_1`, ...,
`hidden_0`, ... and `output`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _nhwc(x: jax.Array) -> jax.Array:
  if x.ndim == 3:
    return x[..., None]
  if x.ndim != 4:
    raise ValueError(f'expected images (B, H, W, C) or (B, H, W); got shape {x.shape}')
  return x


def _scaled(n: int, width: float) -> int:
  return max(1, int(round(n * width)))


class ConvNet(nn.Module):
  """A VGG-like net: per entry of `channels`, two 3x3 'SAME' conv+ReLU and a
  2x2 max-pool; then ReLU dense layers `fc` and the `output` layer.

  `width` multiplies every conv and dense width (1.0 is the paper's network;
  tests use a tiny one). Glorot-normal kernels and zero biases, following
  Frankle & Carbin's appendix. `dropout`, when on, follows each dense hidden
  layer (their dropout experiments).
  """
  channels: tuple[int, ...] = (64,)
  fc: tuple[int, ...] = (256, 256)
  num_classes: int = 10
  width: float = 1.0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _nhwc(x)
    init = nn.initializers.glorot_normal()
    for i, c in enumerate(self.channels):
      for j in range(2):
        x = nn.Conv(_scaled(c, self.width), (3, 3), padding='SAME',
                    kernel_init=init, name=f'conv_{2 * i + j}')(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    for i, f in enumerate(self.fc):
      x = nn.relu(nn.Dense(_scaled(f, self.width), kernel_init=init,
                           name=f'hidden_{i}')(x))
      if self.dropout > 0.0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=init, name='output')(x)


class Conv2(ConvNet):
  """Conv-2 (Frankle & Carbin 2019, Fig. 2): 64,64,pool; FC 256,256,10 (4.3M)."""
  channels: tuple[int, ...] = (64,)


class Conv4(ConvNet):
  """Conv-4 (Frankle & Carbin 2019): 64,64,pool,128,128,pool; FC 256,256,10 (2.4M)."""
  channels: tuple[int, ...] = (64, 128)


class Conv6(ConvNet):
  """Conv-6 (Frankle & Carbin 2019): 64,64,pool,128,128,pool,256,256,pool;
  FC 256,256,10. On 32x32 inputs this has 2.26M parameters; the paper's
  Figure 2 table says 1.7M, which the stated layer sizes do not give."""
  channels: tuple[int, ...] = (64, 128, 256)


class BasicBlock(nn.Module):
  """Two 3x3 conv+BN layers with an identity or projection shortcut.

  The projection (1x1 conv with `stride`, then BN) is used only where the
  shape changes: He et al.'s option B.
  """
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = lambda f, k, s, name: nn.Conv(
        f, (k, k), strides=(s, s), padding='SAME' if k > 1 else 'VALID',
        use_bias=False, kernel_init=nn.initializers.he_normal(), name=name)
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     epsilon=1e-5, name=name)
    y = nn.relu(norm('norm_0')(conv(self.features, 3, self.stride, 'conv_0')(x)))
    y = norm('norm_1')(conv(self.features, 3, 1, 'conv_1')(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = norm('shortcut_norm')(conv(self.features, 1, self.stride, 'shortcut')(x))
    return nn.relu(x + y)


class ResNet20(nn.Module):
  """CIFAR ResNet-20 (He et al. 2016, section 4.2), about 0.27M parameters.

  A 3x3 conv of `width` channels, then 3 stages of `blocks_per_stage` basic
  blocks with `width`, `2*width`, `4*width` channels (stride 2 at the first block
  of stages 2 and 3), global average pooling and the `output` layer.
  Shortcuts are projections (option B: 1x1 conv + BN) where the shape
  changes and identities elsewhere; the paper's CIFAR nets use option A
  (zero padding), which has no shortcut parameters. Running BatchNorm
  statistics live in the `batch_stats` collection: call with
  `mutable=['batch_stats']` when train=True.
  """
  num_classes: int = 10
  width: int = 16
  blocks_per_stage: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _nhwc(x)
    x = nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False,
                kernel_init=nn.initializers.he_normal(), name='conv_0')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     name='norm_0')(x)
    x = nn.relu(x)
    for stage in range(3):
      for block in range(self.blocks_per_stage):
        stride = 2 if (stage > 0 and block == 0) else 1
        x = BasicBlock(self.width * 2 ** stage, stride,
                       name=f'stage_{stage}_block_{block}')(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='output')(x)
