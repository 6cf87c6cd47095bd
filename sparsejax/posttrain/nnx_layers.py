"""Flax NNX models for the programs that need each layer's inputs: post-
training pruning (Wanda, SparseGPT: `calibrate`) and the activation-aware
row score of parameter-efficient fine-tuning (`programs.peft_select`).

Linen layers are seen by method interception (`nn.intercept_methods`), which
never sees an NNX layer: an NNX module is plain Python objects, so an
intercepting program would find no inputs for its layers. Here a merged copy
of the model (`live_module`) gets, on each nnx.Linear and nnx.Conv, a
recording `dot_general` / `conv_general_dilated` attribute, which flax's
layers call with the inputs their kernel meets (`recording`); the user's
module is never touched. A layer that computes without those attributes
(nnx.Einsum, a layer of one's own) records nothing, and the callers refuse a
target kernel that recorded nothing.

A model here is what `sparsejax.train.task.nnx_model` makes (recognised by
its `graphdef`: this package sits below sparsejax.train): params are its
pure dict of nnx.Param values, model state {'nnx_state': other state}.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from flax import nnx

PyTree = Any
KERNEL_CALLS = {nnx.Linear: 'dot_general', nnx.Conv: 'conv_general_dilated'}


def is_nnx(model) -> bool:
  """Whether `model` is an NNX model wrapped as `nnx_model` wraps one."""
  return isinstance(getattr(model, 'graphdef', None), nnx.GraphDef)


def live_module(model, params: PyTree, model_state: dict | None = None) -> nnx.Module:
  """A new NNX module holding `params` (and model_state['nnx_state']), in
  inference mode (`eval()` where it has it), as `nnx_model.apply` runs it
  with train=False; changing it changes neither `model` nor `params`."""
  return model.module({'params': params, **dict(model_state or {})}, train=False)


def kernel_layers(module: nnx.Module) -> dict[tuple, nnx.Module]:
  """{path: layer} of every nnx.Linear and nnx.Conv in the module's graph (a
  layer shared by two paths once), paths as the params tree has them."""
  return {tuple(p): n for p, n in nnx.iter_graph(module) if isinstance(n, tuple(KERNEL_CALLS))}


def kernel_path(path: tuple) -> str:
  """'block_0/mlp/fc_in/kernel': the params leaf of the layer at `path`."""
  return '/'.join(map(str, (*path, 'kernel')))


def call_name(layer) -> str:
  """The attribute through which `layer` multiplies its kernel."""
  return next(name for cls, name in KERNEL_CALLS.items() if isinstance(layer, cls))


@contextlib.contextmanager
def recording(layers: dict[tuple, nnx.Module], see: Callable[[tuple, Any], None]):
  """Within the block, every layer of `layers` ({path: layer}) calls
  `see(path, inputs)` before its matmul or convolution: the inputs as the
  kernel meets them (dtype-promoted, channels last; a circular-padded
  convolution's after its padding). The layers' own functions come back
  after the block, also when it raises."""
  saved = []
  try:
    for path, layer in layers.items():
      name = call_name(layer)
      inner = getattr(layer, name)

      def spy(lhs, *args, _path=path, _inner=inner, **kwargs):
        see(_path, lhs)
        return _inner(lhs, *args, **kwargs)

      saved.append((layer, name, inner))
      setattr(layer, name, spy)
    yield
  finally:
    for layer, name, inner in reversed(saved):
      setattr(layer, name, inner)


def set_kernel(layer, value) -> None:
  """Replaces the kernel of a live layer (the next calls use `value`)."""
  layer.kernel.set_value(value)
