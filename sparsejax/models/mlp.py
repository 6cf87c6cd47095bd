"""Multi-layer perceptrons: a generic MLP, LeNet-300-100 and the MNIST-1D MLP.

Every model here flattens its input, so (B, 28, 28, 1) and (B, 784) both work.
Layers are named `hidden_0`, `hidden_1`, ... and `output`, so a config can
select the classifier with the pattern 'output' and the hidden layers with
'hidden_'.

Biases (`dense_stack(bias=...)`): 'separate' is the usual `bias` leaf, which
the default prunable rule leaves dense; 'kernel_row' stores the bias as the
last row of the layer's kernel, shape (fan_in + 1, width), so a mask on the
kernel covers the bias too and magnitude pruning ranks a layer's weights and
bias together; 'none' has no bias.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def _torch_bias_init(fan_in: int) -> Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default nn.Linear bias."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# PyTorch's default nn.Linear kernel, kaiming_uniform(a=sqrt(5)), is the same
# distribution: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

BIASES = ('separate', 'kernel_row', 'none')


def _check_choice(owner: str, field: str, value, choices) -> None:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f'{owner}.{field} must be one of {list(choices)}, got {value!r}')


class BiasRowDense(nn.Module):
  """y = x @ kernel[:-1] + kernel[-1]: a dense layer whose bias is the last
  row of its (fan_in + 1, features) kernel, initialised from `kernel_init`
  (weight rows, fan_in inputs) and `bias_init` (the last row)."""
  features: int
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]

    def init(key, shape, dtype=jnp.float32):
      k_key, b_key = jax.random.split(key)
      return jnp.concatenate([self.kernel_init(k_key, (fan_in, self.features), dtype),
                              self.bias_init(b_key, (1, self.features), dtype)], axis=0)
    kernel = self.param('kernel', init, (fan_in + 1, self.features))
    y = x @ kernel[:-1]
    return y + kernel[-1].reshape((1,) * (y.ndim - 1) + (-1,))


def dense_stack(x: jax.Array, features: Sequence[int], num_classes: int, *,
                residual: bool = False, dropout: float = 0.0, train: bool = False,
                kernel_init: Initializer = nn.initializers.lecun_normal(),
                torch_bias: bool = False, bias: str = 'separate') -> jax.Array:
  """The body shared by the MLPs; call it inside a compact `__call__`.

  Layers are created in the calling module, so their names are top-level
  (`hidden_0/kernel`, not `MLP_0/hidden_0/kernel`). With `residual`, every
  hidden layer after the first adds its ReLU output to its input,
  h <- h + relu(W h + b) (the form of the MNIST-1D MLP); this needs equal
  widths. Dropout, when on, follows each hidden layer. Biases start at zero,
  or from PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with `torch_bias`;
  `bias` places them (module docstring).
  """
  _check_choice('dense_stack', 'bias', bias, BIASES)
  x = x.reshape(x.shape[0], -1)
  if residual:
    for i in range(1, len(features)):
      if features[i] != features[i - 1]:
        raise ValueError(
            f'a residual MLP needs equal hidden widths after the first layer; '
            f'got features={tuple(features)}')

  def dense(width, name, fan_in):
    bias_init = _torch_bias_init(fan_in) if torch_bias else nn.initializers.zeros
    if bias == 'kernel_row':
      return BiasRowDense(width, kernel_init=kernel_init, bias_init=bias_init, name=name)
    return nn.Dense(width, kernel_init=kernel_init, bias_init=bias_init,
                    use_bias=bias == 'separate', name=name)

  for i, width in enumerate(features):
    h = nn.relu(dense(width, f'hidden_{i}', x.shape[-1])(x))
    x = x + h if (residual and i > 0) else h
    if dropout > 0.0:
      x = nn.Dropout(dropout, deterministic=not train)(x)
  return dense(num_classes, 'output', x.shape[-1])(x)


class MLP(nn.Module):
  """A ReLU MLP classifier: hidden layers of widths `features`, then `output`.

  `residual=True` makes every hidden layer after the first a residual one
  (h <- h + relu(W h + b)). Flax's default LeCun-normal kernels, zero biases.
  """
  features: tuple[int, ...] = (300, 100)
  num_classes: int = 10
  residual: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return dense_stack(x, self.features, self.num_classes, residual=self.residual,
                       dropout=self.dropout, train=train)


LENET_INITS = {'glorot_normal': nn.initializers.glorot_normal(),
               'glorot_uniform': nn.initializers.glorot_uniform()}


class LeNet300100(nn.Module):
  """LeNet-300-100 (LeCun et al. 1998), as used by Frankle & Carbin 2019.

  784-300-100-10 with ReLU; 266,610 parameters. Kernels start from the
  Gaussian Glorot initialisation that Frankle & Carbin use (their appendix),
  biases at zero. `initializer='glorot_uniform'` is the uniform Glorot
  (Xavier) initialisation instead: TensorFlow's default for dense layers,
  which the RigL authors' MNIST script trains (an ablation of
  experiments/rigl_lenet_mnist).
  """
  num_classes: int = 10
  dropout: float = 0.0
  initializer: str = 'glorot_normal'

  def __post_init__(self):
    _check_choice('LeNet300100', 'initializer', self.initializer, tuple(LENET_INITS))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return dense_stack(x, (300, 100), self.num_classes, dropout=self.dropout,
                       train=train, kernel_init=LENET_INITS[self.initializer])


INITS = ('torch', 'lecun')


class MNIST1DMLP(nn.Module):
  """The MLP of the MNIST-1D lottery-ticket notebook (Greydanus & Kobak 2020).

  "Scaling down deep learning with MNIST-1D": 40-500-500-10 where the second
  hidden layer is residual, h = relu(W1 x); h = h + relu(W2 h); out = W3 h
  (their `SparseMLP` in notebooks/lottery_tickets, hidden_size=500). Weights
  and biases start from PyTorch's default nn.Linear initialisation, which is
  what the notebook trains: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The defaults are that model; the other settings are for ablations:
  `residual=False` gives the plain MLP out = W3 relu(W2 relu(W1 x));
  `initializer='lecun'` gives Flax's defaults (LeCun-normal kernels, zero
  biases; the field cannot be called `init`, Module.init's name);
  `bias` is 'separate' (a dense `bias` leaf), 'kernel_row' (the bias is the
  kernel's last row, so the lottery prunes it with the weights in one
  per-layer magnitude ranking, as the notebook's masks do) or 'none'.
  """
  hidden: int = 500
  num_classes: int = 10
  dropout: float = 0.0
  residual: bool = True
  initializer: str = 'torch'
  bias: str = 'separate'

  def __post_init__(self):
    if not isinstance(self.residual, bool):
      raise ValueError(f'MNIST1DMLP.residual must be one of [True, False], '
                       f'got {self.residual!r}')
    _check_choice('MNIST1DMLP', 'initializer', self.initializer, INITS)
    _check_choice('MNIST1DMLP', 'bias', self.bias, BIASES)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    torch = self.initializer == 'torch'
    return dense_stack(x, (self.hidden, self.hidden), self.num_classes,
                       residual=self.residual, dropout=self.dropout, train=train,
                       kernel_init=_TORCH_KERNEL_INIT if torch else nn.initializers.lecun_normal(),
                       torch_bias=torch, bias=self.bias)
