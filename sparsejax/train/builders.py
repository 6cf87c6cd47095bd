"""Typed settings -> the objects a run needs: optimizer, learning-rate
schedule, pruning schedule, prunable-leaf rule and model."""

from __future__ import annotations

import dataclasses
from typing import Callable

import optax

from sparsejax import models
from sparsejax.config import ConfigError, ModelSettings, OptimizerSettings, PruningSettings
from sparsejax.core import allocation as alloc_lib
from sparsejax.core import registry, schedules, select, tree as tree_lib

OPTIMIZERS = ('adam', 'adamw', 'sgd')
LR_SCHEDULES = ('constant', 'cosine', 'linear', 'plateau')


def learning_rate_fn(o: OptimizerSettings, total_steps: int) -> optax.Schedule:
  """Optional linear warmup, then constant, cosine or linear decay to lr * end_factor."""
  if o.schedule not in LR_SCHEDULES:
    raise ConfigError(f"config key 'optimizer.schedule': unknown schedule {o.schedule!r}; "
                      f'choose from {list(LR_SCHEDULES)}')
  lr = float(o.learning_rate)
  decay = o.decay_steps or max(total_steps - o.warmup_steps, 1)
  if o.schedule in ('constant', 'plateau'):
    main = optax.constant_schedule(lr)
  elif o.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay, alpha=o.end_factor)
  else:
    main = optax.linear_schedule(lr, lr * o.end_factor, decay)
  if o.warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, lr, o.warmup_steps)
  return optax.join_schedules([warmup, main], [o.warmup_steps])


def build_optimizer(o: OptimizerSettings, total_steps: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(inner optimizer, learning-rate schedule) from the settings."""
  lr = learning_rate_fn(o, total_steps)
  if o.name == 'adam':
    tx = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    if o.weight_decay:
      raise ConfigError("config key 'optimizer.weight_decay' is set with 'adam'; use "
                        "optimizer.name='adamw' for decoupled weight decay")
  elif o.name == 'adamw':
    tx = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  elif o.name == 'sgd':
    tx = optax.sgd(lr, momentum=o.momentum or None, nesterov=o.nesterov)
    if o.weight_decay:   # L2 on the gradient, as in classic SGD recipes
      tx = optax.chain(optax.add_decayed_weights(o.weight_decay), tx)
  else:
    raise ConfigError(f"config key 'optimizer.name': unknown optimizer {o.name!r}; "
                      f'choose from {list(OPTIMIZERS)}')
  if o.schedule == 'plateau':
    # Scales the updates down when the mean training loss over plateau_steps
    # stops falling (the train step passes value=loss).
    tx = optax.chain(tx, optax.contrib.reduce_on_plateau(
        factor=o.plateau_factor, patience=o.plateau_patience,
        accumulation_size=o.plateau_steps))
  if o.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  return tx, lr


def prunable_rule(p: PruningSettings) -> tree_lib.PrunableRule:
  return tree_lib.PrunableRule(include=p.include, exclude=p.exclude, min_ndim=p.min_ndim)


def build_schedule(p: PruningSettings, seed: int, *, loss_fn: Callable | None = None,
                   batch=None, apply_fn: Callable | None = None,
                   input_shape=None) -> schedules.Schedule:
  """The pruning schedule module; at-init criteria get the model and a batch."""
  if p.schedule == 'dense' and p.sparsity:
    raise ConfigError(f"config key 'sparsity' is {p.sparsity} but pruning.schedule is "
                      "'dense'; pick a schedule (oneshot, gradual, at_init, set, rigl, ...)")
  try:
    allocation = alloc_lib.Allocation(p.allocation, overrides=p.overrides, scales=p.scales,
                                      erk_power_scale=p.erk_power_scale)
    pattern = select.make_pattern(p.pattern, **p.pattern_options)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'pruning settings: {e}') from None
  options = dict(p.schedule_options)
  if p.schedule == 'at_init':
    iterations = options.pop('iterations', 0) or None
    return schedules.at_init(p.criterion, p.sparsity, loss_fn=loss_fn, batch=batch,
                             apply_fn=apply_fn, input_shape=input_shape,
                             iterations=iterations, allocation=allocation, pattern=pattern,
                             seed=seed, **options)
  options.pop('iterations', None)
  return registry.make_schedule(p.schedule, sparsity=p.sparsity, criterion=p.criterion,
                                allocation=allocation, pattern=pattern, seed=seed, **options)


def build_model(m: ModelSettings, num_classes: int, task: str, max_len: int | None = None):
  """The model, with the output size taken from the dataset unless set."""
  if m.name not in models.MODELS:
    raise ConfigError(f"config key 'model.name': unknown model {m.name!r}; "
                      f'choose from {sorted(models.MODELS)}')
  fields = {f.name for f in dataclasses.fields(models.MODELS[m.name])}
  options = dict(m.options)
  size_key = 'vocab_size' if task == 'lm' else 'num_classes'
  if size_key in fields:
    options.setdefault(size_key, num_classes)
  if max_len is not None and 'max_len' in fields:
    options.setdefault('max_len', max_len)
  try:
    return models.get_model(m.name, **options)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'model settings: {e}') from None
