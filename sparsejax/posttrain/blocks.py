"""A model's blocks for layer-by-layer pruning (`calibrate`): found, run
alone, and watched for the inputs of their Dense layers, for Flax Linen and
Flax NNX models alike.

A block is any direct submodule whose name matches the block pattern and
that takes the previous block's output as its first argument (or, where the
blocks return tuples, as a Llama block's (hidden, cache) and Hugging Face's
decoder layers do, the output's first element); its Dense layers are Linen
`nn.Dense` modules or NNX `nnx.Linear` layers. Linen blocks
are found and watched by method interception (`nn.intercept_methods`) and
run alone as unbound clones of their modules; NNX blocks (a model wrapped by
`sparsejax.train.task.nnx_model`) are attributes of a merged copy of the
model, found by putting a recording stand-in in the attribute for one
traced call, run as they are, and watched through `nnx_layers.recording`.
Either kind of block offers the same few methods, which is all `calibrate`
uses. `find_blocks` also returns the kernel of every Dense layer the blocks
call, so that a prunable weight that no Dense layer multiplies (an Einsum,
a convolution, a parameter of one's own) is refused instead of silently
left dense.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable

import jax
import flax.linen as nn
from flax import nnx

from sparsejax.posttrain import nnx_layers


class Enough(Exception):
  """Raised to end a forward pass once every input it was run for is seen."""


def _same(a, b) -> bool:
  return a is b or (not isinstance(a, jax.Array) and not isinstance(b, jax.Array) and a == b)


def _check_chain(calls) -> bool:
  """Blocks called once each, each on the previous one's output with the
  other arguments unchanged; `calls` is [(name, args, kwargs, out)]. Returns
  whether the chained value is the first element of a tuple output (every
  block alike), as in a Llama block's (hidden, cache)."""
  names = [c[0] for c in calls]
  if len(set(names)) != len(names):
    raise ValueError(f'blocks are called more than once: {names}')
  kinds = set()
  for prev, cur in zip(calls, calls[1:]):
    args, kwargs, out = cur[1], cur[2], prev[3]
    first = bool(args) and isinstance(out, tuple) and len(out) > 0 and args[0] is out[0]
    if (not args or (args[0] is not out and not first) or len(args) != len(prev[1])
        or not all(_same(a, b) for a, b in zip(args[1:], prev[1][1:]))
        or kwargs.keys() != prev[2].keys()
        or not all(_same(kwargs[k], prev[2][k]) for k in kwargs)):
      raise ValueError(f'block {cur[0]!r} does not take the output of {prev[0]!r} (or its '
                       'first element) as its first argument with the other arguments '
                       'unchanged; layer-by-layer pruning needs chained blocks')
    kinds.add(first)
  if len(kinds) > 1:
    raise ValueError(f'the blocks {names} pass on their whole output in one place and its '
                     'first element in another; layer-by-layer pruning needs one chain')
  return kinds == {True}


def next_inputs(block, args, kwargs) -> tuple:
  """(args, kwargs) of the block after `block`: its output on (args,
  kwargs), or that output's first element where the blocks chain so, as the
  first argument; the other arguments unchanged."""
  out = block(args, kwargs)
  return ((out[0] if block.first_output else out), *args[1:]), kwargs


def find_blocks(model, params: dict, model_state: dict | None, inputs: list,
                apply_kwargs: dict, pattern: str):
  """([(name, block)] in call order, [(args, kwargs) of the first block per
  input], {kernel paths of the Dense layers the blocks call}).

  Traces the model (no compute) to find its blocks and to check that they
  are chained; then runs every input up to the first block. `params` is
  the tree the blocks' `set_kernel` writes into.
  """
  if nnx_layers.is_nnx(model):
    if set(apply_kwargs) - {'train'} or apply_kwargs.get('train'):
      raise ValueError(f'an NNX model runs as module(x) in inference mode; apply_kwargs '
                       f'{apply_kwargs} cannot be passed to it')
    return _find_nnx(nnx_layers.live_module(model, params, model_state), params, inputs,
                     pattern)
  return _find_linen(model, {'params': params, **(model_state or {})}, inputs, apply_kwargs,
                     pattern)


def _no_blocks(model, pattern):
  return ValueError(f'no submodule of {type(model).__name__} matches the block pattern '
                    f'{pattern!r}')


# --- Flax Linen -------------------------------------------------------------------------

def _is_block(context, pattern: str) -> bool:
  m = context.module
  return (context.method_name == '__call__' and len(m.path) == 1
          and re.search(pattern, m.name or '') is not None)


def _is_dense_call(context) -> bool:
  return isinstance(context.module, nn.Dense) and context.method_name == '__call__'


def _find_linen(model, variables, inputs, apply_kwargs, pattern):
  calls, modules, dense = [], {}, set()

  def trace(next_fun, args, kwargs, context):
    path = context.module.path
    if _is_dense_call(context) and path and re.search(pattern, path[0]):
      dense.add('/'.join((*path, 'kernel')))
    if not _is_block(context, pattern):
      return next_fun(*args, **kwargs)
    out = next_fun(*args, **kwargs)
    modules[context.module.name] = context.module.clone(parent=None, name=None)
    calls.append((context.module.name, args, kwargs, out))
    return out

  with nn.intercept_methods(trace):
    jax.eval_shape(lambda: model.apply(variables, inputs[0], **apply_kwargs))
  if not calls:
    raise _no_blocks(model, pattern)
  first_output = _check_chain(calls)
  first_args = []

  def capture(next_fun, args, kwargs, context):
    if not _is_block(context, pattern):
      return next_fun(*args, **kwargs)
    first_args.append((args, kwargs))
    raise Enough

  for x in inputs:
    try:
      with nn.intercept_methods(capture):
        model.apply(variables, x, **apply_kwargs)
    except Enough:
      pass
  found = [(c[0], LinenBlock(modules[c[0]], {k: v[c[0]] for k, v in variables.items()
                                             if c[0] in v}, first_output)) for c in calls]
  return found, first_args, dense


class LinenBlock:
  """A Linen block: an unbound module and its variables, whose params dict
  (a subtree of the model's) `set_kernel` changes in place."""

  def __init__(self, module: nn.Module, variables: dict, first_output: bool = False):
    self.module, self.variables, self.first_output = module, variables, first_output

  def __call__(self, args, kwargs):
    return self.module.apply(self.variables, *args, **kwargs)

  def run_seeing(self, args, kwargs, see: Callable, traced: bool = False) -> None:
    """Runs the block (only its shapes if `traced`), calling see(path, x)
    with each Dense layer's path in the block and input before the layer."""
    def interceptor(next_fun, a, kw, context):
      if _is_dense_call(context):
        see(tuple(context.module.path), a[0])
      return next_fun(*a, **kw)

    with nn.intercept_methods(interceptor):
      if traced:
        jax.eval_shape(lambda: self(args, kwargs))
      else:
        self(args, kwargs)

  def kernel(self, path):
    return _get(self.variables['params'], (*path, 'kernel'))

  def set_kernel(self, path, value) -> None:
    _set(self.variables['params'], (*path, 'kernel'), value)


# --- Flax NNX ---------------------------------------------------------------------------

class _StandIn:
  """Takes a block's place in its parent: `on_call(block, args, kwargs)`
  answers a call; other attributes read through to the block."""

  def __init__(self, block, on_call):
    self._block, self._on_call = block, on_call

  def __call__(self, *args, **kwargs):
    return self._on_call(self._block, args, kwargs)

  def __getattr__(self, name):
    if name.startswith('__') or name in ('_block', '_on_call'):
      raise AttributeError(name)
    return getattr(self._block, name)


@contextlib.contextmanager
def _standing_in(module, children: dict, on_call):
  """Within: every block of `children` ({name: block}) stands in `module`
  as a _StandIn answering with on_call(name, block, args, kwargs); the
  blocks are put back afterwards, also when the call raises."""
  try:
    for name, child in children.items():
      setattr(module, name, _StandIn(child, lambda b, a, kw, n=name: on_call(n, b, a, kw)))
    yield
  finally:
    for name, child in children.items():
      setattr(module, name, child)


def _find_nnx(module, params, inputs, pattern):
  children = {str(p[0]): n for p, n in nnx.iter_graph(module)
              if len(p) == 1 and isinstance(n, nnx.Module) and re.search(pattern, str(p[0]))}
  calls, dense = [], set()

  def trace(name, block, args, kwargs):
    out = block(*args, **kwargs)
    calls.append((name, args, kwargs, out))
    return out

  layers = {(name, *p): layer for name, child in children.items()
            for p, layer in NNXBlock.dense_layers(child).items()}
  with nnx_layers.recording(layers, lambda p, x: dense.add(nnx_layers.kernel_path(p))), \
       _standing_in(module, children, trace):
    jax.eval_shape(lambda: module(inputs[0]))
  if not calls:
    raise _no_blocks(module, pattern)
  first_output = _check_chain(calls)
  first_args = []

  def capture(name, block, args, kwargs):
    first_args.append((args, kwargs))
    raise Enough

  for x in inputs:
    try:
      with _standing_in(module, children, capture):
        module(x)
    except Enough:
      pass
  found = [(c[0], NNXBlock(children[c[0]], params[c[0]], first_output)) for c in calls]
  return found, first_args, dense


class NNXBlock:
  """An NNX block: a submodule of a live merged model, run as it is; its
  nnx.Linear layers are its Dense layers. `set_kernel` changes the live
  layer and the block's subtree of the params dict alike."""

  def __init__(self, block: nnx.Module, params: dict, first_output: bool = False):
    self.block, self.params, self.first_output = block, params, first_output
    self.layers = self.dense_layers(block)

  @staticmethod
  def dense_layers(block) -> dict:
    return {p: layer for p, layer in nnx_layers.kernel_layers(block).items()
            if isinstance(layer, nnx.Linear)}

  def __call__(self, args, kwargs):
    return self.block(*args, **kwargs)

  def run_seeing(self, args, kwargs, see: Callable, traced: bool = False) -> None:
    with nnx_layers.recording(self.layers, see):
      if traced:
        jax.eval_shape(lambda: self(args, kwargs))
      else:
        self(args, kwargs)

  def kernel(self, path):
    return _get(self.params, (*path, 'kernel'))

  def set_kernel(self, path, value) -> None:
    nnx_layers.set_kernel(self.layers[path], value)
    _set(self.params, (*path, 'kernel'), value)


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree[k]
  tree[path[-1]] = value
