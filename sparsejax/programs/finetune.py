"""Fine-tuning trained weights: prune, then recover.

`prune_then_finetune(task, params, ...)` starts from trained weights. With a
`OneShot` schedule in the task, it prunes them once before training (any
criterion, allocation and pattern, 2:4 included), evaluates the pruned model
at step 0 and fine-tunes with the mask fixed: the recovery of Han et al. 2015
and the ShrinkBench protocol (Blalock et al. 2020). With any other schedule
('gradual', 'rigl', ...) it starts from the weights and prunes as it trains.
The recipe (optimizer, learning rate, weight decay, early stopping) is the
task's. With `task.distill` (teacher-guided retraining, `train.distill`) the
loss adds a distillation term whose teacher, unless given, is `params` as
loaded: the dense weights before pruning. `fine_tune` is the same idea as a
plain Python loop.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import optax

from sparsejax.core import masks as masks_lib, prune as prune_lib
from sparsejax.core import schedules, transform
from sparsejax.programs import results as results_lib
from sparsejax.train import loop
from sparsejax.train.task import Task

PyTree = Any


def prune_once(params: PyTree, schedule: schedules.Schedule, rule, key=None):
  """(pruned params, masks): one-shot pruning with a schedule's settings."""
  return prune_lib.prune(params, schedule.sparsity, schedule.criterion,
                         allocation=schedule.allocation, pattern=schedule.pattern, rule=rule,
                         key=key)


def prune_then_finetune(task: Task, params: PyTree, workdir, *, model_state: PyTree = None,
                        progress: bool = False, record: dict | None = None) -> dict:
  """Prunes (OneShot) or starts pruning (other schedules) trained `params`,
  fine-tunes, and returns the result row (with 'after_pruning' metrics).
  A `task.distill` without a teacher distills from `params` (and
  `model_state`), the weights before pruning."""
  if task.distill is not None and task.distill.teacher is None and isinstance(
      task.schedule, schedules.OneShot):   # the start will be the pruned weights
    task = task.replace(distill=task.distill.replace(
        teacher=params, teacher_model_state=model_state or None))
  if isinstance(task.schedule, schedules.OneShot):
    key = jax.random.fold_in(jax.random.key(task.loop.seed), 7)
    pruned, masks = prune_once(params, task.schedule, task.rule, key)
    start = loop.Start(jax.device_get(pruned), model_state or None)
    task = task.replace(schedule=schedules.FixedMask(masks=jax.device_get(masks)),
                        loop=task.loop.replace(eval_at_start=True))
  else:
    start = loop.Start(params, model_state or None)
    task = task.with_loop(eval_at_start=True)
  loop.train(task, workdir, start=start, progress=progress, record=record)
  row = results_lib.run_row(workdir, seed=task.loop.seed, arm='masked')
  at_start = [m for s, m in row['curve'] if s == 0]
  row['after_pruning'] = at_start[0] if at_start else None
  return row


def fine_tune(params: PyTree, masks: PyTree, loss_fn: Callable, batches: Iterable,
              optimizer: optax.GradientTransformation | None = None,
              steps: int | None = None) -> PyTree:
  """Sparse fine-tuning in plain Python: trains `params` with `masks` fixed.

  `loss_fn(params, batch) -> scalar`; `batches` yields batches (stops after
  `steps` if given). Returns the params; pruned weights are exactly zero.
  """
  tx = transform.sparsify(optimizer or optax.adamw(1e-3, weight_decay=1e-4),
                          schedules.FixedMask(masks=masks))
  state = tx.init(params)
  params = masks_lib.apply_masks(params, transform.get_masks(state))

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for i, batch in enumerate(batches):
    if steps is not None and i >= steps:
      break
    params, state = step(params, state, batch)
  return params
