"""What a training run trains, as objects: the `Task` (and, in its field
`loop`, how the loop runs it: `LoopSettings`, module `loop_settings`).

A program (train, lottery, fine-tuning, sweeps) takes a Task and returns what
it produced; configs only build Tasks, at the top (`sparsejax.experiment`).
Bring your own pieces:

- `model`: any Flax Linen module (`init(rngs, x, train=False)`,
  `apply(variables, x, train=..., rngs=..., mutable=...)`; other variable
  collections such as batch_stats are carried as model state), or a Flax NNX
  module wrapped by `nnx_model`; or no model and an `init(key) -> params`;
- `loss`: the default is softmax cross-entropy on the model's outputs with
  accuracy; `output_loss(outputs, labels) -> per-example losses` replaces the
  formula (e.g. `optax.losses.sigmoid_binary_cross_entropy`), and
  `loss(params, batch, rng) -> loss | (loss, metrics)` replaces the whole
  objective (close over your own apply function);
- `dataset`: a `sparsejax.data.Dataset` of `Source`s (`ArraySource(x, y)`
  for arrays in memory);
- `optimizer`: any optax transformation (the loop wraps it in `sparsify`
  with the `schedule`, then in `optax.MultiSteps` if `accumulate` > 1, so the
  schedule counts real updates);
- `distill`: a `sparsejax.train.distill.Distill` adds a distillation term
  from a teacher (the same model with other weights) to the model's loss;
- `compute_dtype` / `param_dtype`: mixed precision as a policy around the
  model (as in jmp, Micikevicius et al. 2018): params are stored in
  `param_dtype`, cast to `compute_dtype` with the float inputs for the
  forward and backward pass, and the outputs cast to float32 before the
  loss. Pruned weights stay exactly zero in every dtype (`sparsify` makes
  the update of a pruned weight -w, and w + (-w) is 0 exactly);
- `loop`: a `LoopSettings` (steps, seed, the cadence of logs, evaluations
  and checkpoints), which no compiled program reads.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sparsejax.core import schedules, tree as tree_lib
from sparsejax.data import base as data_base
from sparsejax.train import distill as distill_lib
from sparsejax.train.errors import SetupError
from sparsejax.train.loop_settings import (LOOP_FIELDS, LoopSettings, delegating_property,
                                           pop_flat)
from sparsejax.train.model_calls import DTYPES, cast_floats, takes, train_kwarg
from sparsejax.train.nnx_adapter import nnx_model  # noqa: F401  (imported from here too)

__all__ = ['Task', 'LoopSettings', 'SetupError', 'nnx_model', 'softmax_cross_entropy',
           'cast_floats', 'train_kwarg', 'takes', 'DTYPES']

PyTree = Any


def softmax_cross_entropy(outputs, labels, label_smoothing: float = 0.0):
  """Per-position softmax cross-entropy with integer labels (the default); with
  label_smoothing s the target is (1 - s) one-hot + s / classes (Szegedy et al. 2016)."""
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, outputs.shape[-1], dtype=outputs.dtype),
                                label_smoothing)
  return optax.softmax_cross_entropy(outputs, targets)


def _flat_loop_keywords(cls):
  """`cls.__init__` also taking the loop settings as flat keywords
  (deprecated: `pop_flat` warns); the signature shown stays the dataclass's."""
  fields_init = cls.__init__

  @functools.wraps(fields_init)
  def __init__(self, *args, **kwargs):
    loop = pop_flat(kwargs, kwargs.pop('loop', None), 'Task(...)')
    fields_init(self, *args, **({} if loop is None else {'loop': loop}), **kwargs)

  cls.__init__ = __init__
  for name in LOOP_FIELDS:
    setattr(cls, name, delegating_property(name))
  return cls


@_flat_loop_keywords
@dataclasses.dataclass(frozen=True)
class Task:
  """A training run: what is trained, and (`loop`) how the loop runs it.

  Every field but `loop` may change the compiled programs: runs share them
  only when all of these fields are equal (`compiled.program_key`)."""
  dataset: data_base.Dataset
  optimizer: optax.GradientTransformation
  model: Any = None
  init: Callable | None = None            # key -> params, when there is no model
  loss: Callable | None = None            # (params, batch, rng) -> loss | (loss, metrics)
  output_loss: Callable = softmax_cross_entropy
  augment: Callable | None = None         # (x, key) -> x on training batches (data.augment)
  schedule: schedules.Schedule = schedules.Dense()
  rule: Callable = tree_lib.DEFAULT_RULE  # which leaves are prunable
  batch_size: int = 100
  eval_batch_size: int = 1000
  accumulate: int = 1                     # micro-steps per update (optax.MultiSteps)
  optimizer_state: str = 'dense'          # 'compact': for the kept weights only (fixed masks)
  pack_masks: bool = False                # masks stored as bits in the optimizer state
  mesh_shape: tuple[int, int] = (-1, 1)   # (data, model)
  mesh_rules: tuple = ()                  # (leaf-path regex, partition spec)
  mesh_fsdp: bool = False                 # also split params (and moments) over 'data'
  on_device: str = 'auto'                 # keep the train split on the devices
  distill: distill_lib.Distill | None = None   # a teacher's term in the training loss
  compute_dtype: str = 'float32'          # the model's forward/backward ('bfloat16': mixed)
  param_dtype: str = 'float32'            # how params (and so optimizer moments) are stored
  loop: LoopSettings = LoopSettings()     # steps, seed, cadence: never in a compiled program

  def __post_init__(self):
    if self.model is None and (self.init is None or self.loss is None):
      raise SetupError('a Task needs a model, or an init(key) -> params and a '
                       'loss(params, batch, rng)')
    if self.distill is not None:
      if not isinstance(self.distill, distill_lib.Distill):
        raise SetupError(f'distill must be a sparsejax Distill, got {self.distill!r}')
      if self.model is None or self.loss is not None:
        raise SetupError('distillation compares the model outputs of student and teacher: '
                         'it needs a model and its output_loss, not a whole-objective loss')
    if not isinstance(self.schedule, schedules.Schedule):
      raise SetupError(f'schedule must be a sparsejax Schedule, got {self.schedule!r}')
    if not isinstance(self.loop, LoopSettings):
      raise SetupError(f'loop must be a LoopSettings, got {self.loop!r}')
    for name in ('batch_size', 'eval_batch_size', 'accumulate'):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise SetupError(f'{name} must be a positive integer, got {v!r}')
    for name in ('compute_dtype', 'param_dtype'):
      if getattr(self, name) not in DTYPES:
        raise SetupError(f'{name} must be one of {list(DTYPES)}, got {getattr(self, name)!r}')
    if self.model is None and (self.compute_dtype, self.param_dtype) != ('float32', 'float32'):
      raise SetupError('compute_dtype and param_dtype act around a model; with your own '
                       'init and loss, cast inside them instead')
    if self.optimizer_state not in ('dense', 'compact'):
      raise SetupError(f"optimizer_state must be 'dense' or 'compact', got "
                       f'{self.optimizer_state!r}')
    for split in self.loop.eval_splits:
      if getattr(self.dataset, split) is None:
        raise SetupError(f'eval_splits: dataset {self.dataset.name!r} has no {split!r} split')

  @property
  def updates(self) -> int:
    """Optimizer updates in the run (micro-steps / accumulate)."""
    return self.loop.steps // self.accumulate

  def replace(self, **changes) -> 'Task':
    """A copy with `changes` to its fields (loop settings as flat keywords:
    deprecated, see `with_loop`)."""
    loop = pop_flat(changes, changes.pop('loop', self.loop), 'task.replace(...)')
    return dataclasses.replace(self, loop=loop, **changes)

  def with_loop(self, **changes) -> 'Task':
    """A copy with `changes` to its loop settings: `task.with_loop(seed=1)`."""
    return dataclasses.replace(self, loop=self.loop.replace(**changes))

  # -- the pieces the loop compiles ---------------------------------------------------
  def init_variables(self, key) -> dict:
    """{'params': ..., other collections} at `key`."""
    if self.model is None:
      return {'params': self.init(key)}
    x = jnp.zeros((1, *self.dataset.input_shape), self.dataset.input_dtype)
    variables = dict(self.model.init({'params': key}, x, **self._train_kwarg(False)))
    if self.param_dtype != 'float32':
      variables['params'] = cast_floats(variables['params'], self.param_dtype)
    return variables

  def _train_kwarg(self, train: bool) -> dict:
    return train_kwarg(self.model, train)

  def apply(self, params, model_state, x, train: bool = False, key=None):
    """(outputs, new model state) of the model."""
    out, model_state, _ = self.apply_capturing(params, model_state, x, train, key)
    return out, model_state

  def apply_capturing(self, params, model_state, x, train: bool = False, key=None,
                      capture=None):
    """(outputs, new model state, intermediates): with `capture` (a Flax
    `capture_intermediates` filter; Linen models only) the outputs of the
    modules it selects, else {}."""
    mixed = self.compute_dtype != 'float32' or self.param_dtype != 'float32'
    if mixed:   # the policy: compute in compute_dtype, outputs back in float32
      params, x = cast_floats(params, self.compute_dtype), cast_floats(x, self.compute_dtype)
    out, new_state, hidden = self._apply(params, model_state, x, train, key, capture)
    if mixed:   # model state (BatchNorm statistics) keeps its own dtypes
      out = cast_floats(out, 'float32')
      new_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, model_state)
    return out, new_state, hidden

  def _apply(self, params, model_state, x, train, key, capture):
    variables = {'params': params, **model_state}
    kwargs = self._train_kwarg(train)
    if key is not None and takes(self.model.apply, 'rngs'):
      kwargs['rngs'] = {'dropout': key}
    mutable = list(model_state) if train and model_state else []
    if capture is not None:
      if not isinstance(self.model, nn.Module):
        raise SetupError('capturing hidden states needs a Flax Linen model')
      kwargs['capture_intermediates'] = capture
      mutable.append('intermediates')
    if not mutable:
      return self.model.apply(variables, x, **kwargs), model_state, {}
    out, new_state = self.model.apply(variables, x, mutable=mutable, **kwargs)
    new_state = dict(new_state)
    hidden = new_state.pop('intermediates', {})
    return out, (new_state if train and model_state else model_state), hidden

  def train_loss(self, params, model_state, batch, key, teacher=None):
    """(mean loss, (metrics, new model state)) for one training batch; with
    `distill`, `teacher` ({'params', 'model_state'}) gives the teacher's term."""
    if self.loss is not None:
      if self.augment is not None and key is not None:
        batch = (self.augment(batch[0], jax.random.fold_in(key, 0x6175)), *batch[1:])
      loss, metrics = _split(self.loss(params, batch, key))
      return loss, (metrics, model_state)
    x, y = batch
    if self.augment is not None and key is not None:
      x = self.augment(x, jax.random.fold_in(key, 0x6175))
    if self.distill is not None:
      if teacher is None:
        raise SetupError('this task distills from a teacher, but the train step got none')
      loss, metrics, model_state, out = self.distill.objective(self, params, model_state,
                                                               x, y, key, teacher)
    else:
      out, model_state = self.apply(params, model_state, x, True, key)
      loss, metrics = jnp.mean(self.output_loss(out, y)), {}
    if _is_classification(out, y):
      metrics = {'accuracy': jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32)),
                 **metrics}
    return loss, (metrics, model_state)

  def eval_loss(self, params, model_state, batch):
    """Mean loss of a batch (x, y) with the model in inference mode (no dropout,
    BatchNorm's running statistics): what pruning scores differentiate."""
    x, y = batch
    sums = self.eval_sums(params, model_state, (x, y, jnp.ones(y.shape[:1], jnp.float32)))
    return sums['loss'] / sums['count']

  def initial_model_state(self) -> dict:
    """The non-param variables of a fresh init (empty for most models)."""
    abstract = jax.eval_shape(self.init_variables, jax.random.key(self.loop.seed))
    if len(abstract) == 1:
      return {}
    variables = jax.jit(self.init_variables)(jax.random.key(self.loop.seed))
    return {k: v for k, v in variables.items() if k != 'params'}

  def eval_sums(self, params, model_state, batch):
    """Sums over a padded eval batch (x, y, weight): {'loss', metrics..., 'count'}."""
    per, wb = self.eval_per_example(params, model_state, batch)
    return {**{k: jnp.sum(v * wb) for k, v in per.items()}, 'count': jnp.sum(wb)}

  def eval_per_example(self, params, model_state, batch):
    """({'loss', metrics...: one value per example, or per label for a
    sequence (B, T)}, their weights): what eval_sums adds up, kept apart for
    paired comparisons of two runs on the same test examples."""
    x, y, w = batch
    if self.loss is not None:
      def one(xi, yi):
        loss, metrics = _split(self.loss(params, (xi[None], yi[None]), None))
        return {'loss': loss, **metrics}
      return jax.vmap(one)(x, y), w
    out, _ = self.apply(params, model_state, x, False)
    per = {'loss': self.output_loss(out, y)}
    if _is_classification(out, y):
      per['accuracy'] = (jnp.argmax(out, -1) == y).astype(jnp.float32)
    return per, jnp.broadcast_to(w.reshape(w.shape + (1,) * (y.ndim - 1)), y.shape)


def _split(result):
  if isinstance(result, tuple):
    loss, metrics = result
    return loss, dict(metrics)
  return result, {}


def _is_classification(out, y) -> bool:
  return out.ndim == y.ndim + 1 and jnp.issubdtype(y.dtype, jnp.integer)
