"""A Flax NNX module as a Linen-style model: `nnx_model`, which a `Task`
takes as its `model` (imported from here or from `sparsejax.train.task`)."""

from __future__ import annotations

from typing import Any

import jax

from sparsejax.train.errors import SetupError


class nnx_model:   # noqa: N801  (used like a function: nnx_model(...))
  """A Flax NNX module as a Linen-style model: its nnx.Param state is the params
  tree, any other state (BatchNorm statistics, RNG streams, ...) the model
  state. The module is called as `module(x)`; `train` switches it with
  `module.train()` / `module.eval()` where it has them.

  Where the initial weights come from (NNX modules draw their weights when
  they are constructed, so a built module cannot draw others):
  - `nnx_model(lambda rngs: Net(..., rngs=rngs))`, a factory `rngs -> module`:
    `init(key)` builds the module from `nnx.Rngs(key)`, so each seed (and the
    lottery's `reinit` control) gets new weights, as with a Linen model;
  - `nnx_model(Net(..., rngs=nnx.Rngs(0)))`, a built module: its own weights,
    whatever the key (`redraws` is False). Programs that need other weights
    from another key (the lottery's `reinit` control, replicates over seeds)
    refuse such a model rather than reuse these weights silently.
  """

  def __init__(self, module):
    from flax import nnx
    self._nnx = nnx
    if isinstance(module, nnx.Module):
      self._factory = None
    elif callable(module):
      self._factory = module
      module = nnx.eval_shape(lambda: self._build(jax.random.key(0)))
    else:
      raise SetupError(f'nnx_model takes an NNX module or a function rngs -> module, got '
                       f'{type(module).__name__}')
    self.graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    self._templates = (params, rest)      # nnx.State: where each leaf goes, by path
    if self._factory is None:
      self._params = nnx.to_pure_dict(params)
      self._rest = nnx.to_pure_dict(rest)

  @property
  def redraws(self) -> bool:
    """Whether `init` draws the weights from its key (False: a built module's own)."""
    return self._factory is not None

  def _build(self, key):
    module = self._factory(self._nnx.Rngs(key))
    if not isinstance(module, self._nnx.Module):
      raise SetupError(f'the NNX model factory returned {type(module).__name__}, not an '
                       'nnx.Module')
    return module

  def init(self, rngs, x, train=False):
    del x, train
    if self._factory is None:
      params, rest = self._params, self._rest
    else:
      key = rngs['params'] if isinstance(rngs, dict) else rngs
      _, params, rest = self._nnx.split(self._build(key), self._nnx.Param, ...)
      params, rest = self._nnx.to_pure_dict(params), self._nnx.to_pure_dict(rest)
    out = {'params': params}
    if jax.tree.leaves(rest):
      out['nnx_state'] = rest
    return out

  def _state(self, which: int, pure) -> Any:
    """An nnx.State holding the leaves of the pure dict `pure`, matched by path
    (not by leaf order: a checkpoint or an export may give a list's indices as
    strings, and '10' sorts before '2')."""
    state = jax.tree.map(lambda v: v, self._templates[which])
    self._nnx.replace_by_pure_dict(state, pure)
    return state

  def module(self, variables: dict, train: bool = False):
    """A new live NNX module holding `variables` ({'params': ..., 'nnx_state':
    ...}), in training or inference mode (`train()` / `eval()` where it has
    them); changing it changes neither this model nor `variables`."""
    nnx = self._nnx
    module = nnx.merge(self.graphdef, self._state(0, variables['params']),
                       self._state(1, variables.get('nnx_state', {})))
    if hasattr(module, 'train') and hasattr(module, 'eval'):
      module.train() if train else module.eval()
    return module

  def apply(self, variables, x, train=False, mutable=(), *, module_hook=None):
    """The module's outputs on `x` with `variables` (and its new state with
    `mutable`); `module_hook(module)` may change the merged module before the
    call (export.sparse_apply gives its Linear layers sparse products)."""
    nnx = self._nnx
    module = self.module(variables, train)
    if module_hook is not None:
      module_hook(module)
    out = module(x)
    if mutable:
      _, _, rest = nnx.split(module, nnx.Param, ...)
      return out, {'nnx_state': nnx.to_pure_dict(rest)}
    return out
