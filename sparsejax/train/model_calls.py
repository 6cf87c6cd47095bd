"""How a `Task` calls its model: the `train` keyword where the model's call
takes it, and the float casts of the mixed-precision policy (`DTYPES`)."""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = ('float32', 'bfloat16', 'float16')


def cast_floats(tree, dtype):
  """`tree` with its floating-point leaves in `dtype` (integers, bools and
  keys unchanged)."""
  dtype = jnp.dtype(dtype)
  return jax.tree.map(
      lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
      tree)


def train_kwarg(model, train: bool) -> dict:
  """{'train': train} for models whose call takes it (every built-in model
  does; a user's Linen module or an NNX model may not)."""
  fn = model.__call__ if isinstance(model, nn.Module) else model.apply
  return {'train': train} if takes(fn, 'train') else {}


def takes(fn, name: str) -> bool:
  """Whether `fn` accepts keyword `name` (True when its signature is unknown)."""
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return True
  return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
