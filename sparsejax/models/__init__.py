"""Models (the training stack's model layer): Flax Linen classifiers and a
small language model, by name.

`MODELS` is a plain dict literal built once; nothing registers itself at
import time. Every model is called as `model.apply(variables, x, train=False)`
(with `rngs={'dropout': key}` when training with dropout, and
`mutable=['batch_stats']` when training a model with BatchNorm) and returns
logits. Every classifier's last layer is named `output`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.core.imports import resolve
from sparsejax.models.bert import BertEncoder
from sparsejax.models.conv import BasicBlock, Conv2, Conv4, Conv6, ConvNet, ResNet20
from sparsejax.models.llama import Llama
from sparsejax.models.mlp import MLP, LeNet300100, MNIST1DMLP
from sparsejax.models.transformer import TransformerDecoder, TransformerEncoder

MODELS = {
    'mlp': MLP,
    'lenet300_100': LeNet300100,
    'mnist1d_mlp': MNIST1DMLP,
    'conv2': Conv2,
    'conv4': Conv4,
    'conv6': Conv6,
    'resnet20': ResNet20,
    'transformer_encoder': TransformerEncoder,
    'transformer_decoder': TransformerDecoder,
    'bert': BertEncoder,
    'llama': Llama,
}


def model_class(name: str):
  """The model class of a registry name or an import path 'pkg.module:Class'."""
  return resolve(name, MODELS, 'model')


def model_settings(name: str) -> list[str]:
  """The keyword settings a model accepts (its dataclass fields)."""
  cls = model_class(name)
  if not dataclasses.is_dataclass(cls):
    raise ValueError(f'model {name!r} is not a Linen module (a dataclass): its settings are '
                     'its own signature\'s')
  return [f.name for f in dataclasses.fields(cls) if f.name not in ('parent', 'name')]


def get_model(name: str, **kwargs) -> nn.Module:
  """A model by registry name with keyword settings; unknown names or settings
  raise ValueError."""
  settings = model_settings(name)
  for key in kwargs:
    if key not in settings:
      raise ValueError(f'model {name!r} has no setting {key!r}; '
                       f'its settings are {settings}')
  return model_class(name)(**kwargs)


def init_variables(model: nn.Module, key: jax.Array, input_shape: Sequence[int],
                   input_dtype=jnp.float32) -> dict:
  """Initialises `model` on a batch of one zero example of `input_shape`.

  Returns the variables dict ({'params': ...} plus 'batch_stats' for models
  with BatchNorm). Dropout is off. Pure in `key`, so it works under jax.jit
  and jax.eval_shape (bind the model and shape, e.g. with functools.partial).
  """
  x = jnp.zeros((1, *input_shape), dtype=input_dtype)
  return dict(model.init({'params': key}, x, train=False))


__all__ = ['MODELS', 'get_model', 'init_variables', 'model_class', 'model_settings', 'MLP',
           'LeNet300100', 'MNIST1DMLP', 'ConvNet', 'Conv2', 'Conv4', 'Conv6',
           'BasicBlock', 'ResNet20', 'TransformerEncoder', 'TransformerDecoder',
           'BertEncoder']
