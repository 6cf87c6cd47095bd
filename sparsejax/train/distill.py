"""Teacher-guided retraining: fine-tuning with a distillation term from a
(dense) teacher, evaluated inside the same jitted train step.

The objective of a training batch is

  task_weight * task loss
  + kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
  + hidden_weight * MSE(student hidden states, teacher hidden states)

The KL term is the knowledge distillation of Hinton et al. 2015 ("Distilling
the knowledge in a neural network"): soft targets at temperature T, scaled
by T^2 so that its gradients keep their size as T changes (their Sec. 2).
It takes the model's outputs as logits over the last axis (classes, or the
vocabulary at every position of a language model) and averages over
examples and positions as the task loss does. The hidden term matches the
outputs of the modules whose path matches `hidden_modules` (by default the
Transformer blocks `block_<i>` of models/transformer.py and `layer_<i>` of
models/bert.py), captured with Flax's `capture_intermediates`: FitNets'
hints (Romero et al. 2015) at every block, as TinyBERT (Jiao et al. 2020)
distils hidden states; it is the mean over those modules of the elementwise
mean squared error.

The teacher is the same model with its own weights: `teacher` params (and
model state), or None for the weights the run starts from (`loop.Start`,
before the run prunes them). It runs in inference mode (no dropout,
BatchNorm's running statistics) on the same augmented batch, and no
gradient flows into it (`stop_gradient`). Its weights are an argument of
the jitted step that is never donated or updated; they are not checkpointed
(a resumed run rebuilds them from its inputs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import tree as tree_lib

PyTree = Any
BLOCKS = r'^(block|layer)_\d+$'   # Transformer blocks (as sparsejax.posttrain.BLOCKS)


class DistillError(ValueError):
  """A distillation setting that cannot be used; `key` names the field."""

  def __init__(self, key: str, message: str):
    self.key = key
    super().__init__(message)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array,
            temperature: float = 1.0) -> jax.Array:
  """T^2 KL(softmax(teacher / T) || softmax(student / T)) over the last axis,
  one value per example (or position); Hinton et al. 2015."""
  t = jnp.asarray(temperature, jnp.float32)
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  log_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
  return t * t * jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)


def hidden_mse(student: PyTree, teacher: PyTree) -> jax.Array:
  """Mean over the matched leaves of the elementwise mean squared error
  between student and teacher hidden states (trees of the same structure)."""
  pairs = list(zip(jax.tree.leaves(student), jax.tree.leaves(teacher)))
  if not pairs:
    raise ValueError('no hidden states to match')
  errors = [jnp.mean(jnp.square(s.astype(jnp.float32) - t.astype(jnp.float32)))
            for s, t in pairs]
  return sum(errors) / len(errors)


def module_filter(pattern: str):
  """A `capture_intermediates` filter: the `__call__` output of every module
  whose path ('block_0', 'block_0/mlp/fc_in') matches `pattern`."""
  regex = re.compile(pattern)
  return lambda module, method: (method == '__call__' and bool(module.path)
                                 and regex.search('/'.join(module.path)) is not None)


@dataclasses.dataclass(frozen=True)
class Distill:
  """The distillation term of a `Task`; see the module docstring.

  `temperature` defaults to 2.0: T = 1 compares the plain softmax outputs,
  a higher T softens the teacher's distribution so that the relative sizes
  of its small probabilities carry more of the signal (Hinton et al. 2015).
  With the weights' defaults the objective is the task loss plus the KL
  term, so a learning rate tuned for plain fine-tuning still fits.
  """
  teacher: PyTree = None              # params; None: the weights the run starts from
  teacher_model_state: PyTree = None  # None: the start's (or a fresh init's) model state
  temperature: float = 2.0
  kd_weight: float = 1.0
  task_weight: float = 1.0
  hidden_weight: float = 0.0
  hidden_modules: str = BLOCKS        # regex over module paths, for the hidden term

  def __post_init__(self):
    t = self.temperature
    if not _number(t) or not t > 0:
      raise DistillError('temperature', f'temperature must be a positive number, got {t!r}')
    for key in ('kd_weight', 'task_weight', 'hidden_weight'):
      v = getattr(self, key)
      if not _number(v) or v < 0 or not np.isfinite(v):
        raise DistillError(key, f'{key} must be a non-negative number, got {v!r}')
    if not self.kd_weight and not self.hidden_weight:
      raise DistillError('kd_weight', 'kd_weight and hidden_weight are both 0: there is '
                         'nothing to distill (turn distillation off instead)')
    if not isinstance(self.hidden_modules, str) or not self.hidden_modules:
      raise DistillError('hidden_modules', 'hidden_modules must be a regex over module '
                         f'paths, got {self.hidden_modules!r}')
    try:
      re.compile(self.hidden_modules)
    except re.error as e:
      raise DistillError('hidden_modules', f'hidden_modules {self.hidden_modules!r} is not '
                         f'a regex: {e}') from None

  def replace(self, **changes) -> 'Distill':
    return dataclasses.replace(self, **changes)

  def settings(self) -> dict:
    """The weights, temperature and module pattern (JSON-friendly)."""
    out = {k: getattr(self, k) for k in ('temperature', 'kd_weight', 'task_weight',
                                         'hidden_weight')}
    if self.hidden_weight:
      out['hidden_modules'] = self.hidden_modules
    return out

  def objective(self, task, params, model_state, x, y, key, teacher):
    """(loss, metrics, new model state, student outputs) of a training batch:
    `task` gives the model, its apply and the task loss (`output_loss`);
    `teacher` is {'params': ..., 'model_state': ...}."""
    capture = module_filter(self.hidden_modules) if self.hidden_weight else None
    out, model_state, hidden = task.apply_capturing(params, model_state, x, True, key,
                                                    capture)
    teacher = jax.lax.stop_gradient(teacher)
    t_out, _, t_hidden = task.apply_capturing(teacher['params'], teacher['model_state'], x,
                                              False, None, capture)
    t_out, t_hidden = jax.lax.stop_gradient((t_out, t_hidden))
    task_loss = jnp.mean(task.output_loss(out, y))
    metrics = {'task_loss': task_loss}
    loss = self.task_weight * task_loss
    if self.kd_weight:
      metrics['kd_loss'] = jnp.mean(kd_loss(out, t_out, self.temperature))
      loss = loss + self.kd_weight * metrics['kd_loss']
    if self.hidden_weight:
      metrics['hidden_loss'] = hidden_mse(hidden, t_hidden)
      loss = loss + self.hidden_weight * metrics['hidden_loss']
    return loss, metrics, model_state, out


def check_model(distill: Distill, task, abstract_params, abstract_model_state) -> None:
  """Raises DistillError when the model's outputs are not logits over classes
  (the KL term) or no module matches `hidden_modules` (the hidden term);
  traces shapes only. The hidden term needs a Flax Linen model (its module
  outputs come from `capture_intermediates`, which sees no Flax NNX layer):
  any other model is refused here, before training, naming the setting."""
  if distill.hidden_weight and not isinstance(task.model, nn.Module):
    raise DistillError('hidden_weight', 'the hidden-state term (hidden_weight > 0) captures '
                       "module outputs with Flax Linen's capture_intermediates, and "
                       f'{type(task.model).__name__} is not a Flax Linen module (an NNX '
                       'model wrapped by nnx_model has no Linen modules to capture): set '
                       'hidden_weight to 0; the KL term (kd_weight) works with any model')
  x = jax.ShapeDtypeStruct((1, *task.dataset.input_shape), task.dataset.input_dtype)
  capture = module_filter(distill.hidden_modules) if distill.hidden_weight else None
  out, _, hidden = jax.eval_shape(
      lambda p, s, x: task.apply_capturing(p, s, x, False, None, capture),
      abstract_params, abstract_model_state, x)
  if distill.kd_weight and (not hasattr(out, 'shape') or out.ndim < 2 or out.shape[-1] < 2):
    raise DistillError('kd_weight', 'the KL term takes the model outputs as logits over '
                       f'the last axis, but they have shape {getattr(out, "shape", out)}')
  if distill.hidden_weight and not jax.tree.leaves(hidden):
    everything = jax.eval_shape(
        lambda p, s, x: task.apply_capturing(p, s, x, False, None, module_filter('.')),
        abstract_params, abstract_model_state, x)[2]
    names = sorted({p.rsplit('/__call__', 1)[0] for p, _ in tree_lib.leaves_with_paths(
        everything)})
    raise DistillError('hidden_modules', f'hidden_modules {distill.hidden_modules!r} '
                       f'matches no module of the model; its modules: {names}')


def fingerprint(teacher: PyTree) -> str:
  """sha256 (16 hex digits) of the teacher's leaves, paths and dtypes: what a
  workdir records, so that a resume with other teacher weights is refused."""
  h = hashlib.sha256()
  for path, leaf in tree_lib.leaves_with_paths(jax.device_get(teacher)):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f'{path}:{a.dtype}:{a.shape};'.encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)
