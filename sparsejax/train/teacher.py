"""The distillation teacher of a run (sparsejax.train.distill): where its
weights come from, a check that it is not pruned already, and its placement
on the devices as an input of the train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.train import distill as distill_lib
from sparsejax.train.task import SetupError, Task


def zero_fraction(params, rule) -> float:
  """The fraction of the prunable weights that are exactly zero."""
  leaves = [np.asarray(x) for p, x in tree_lib.leaves_with_paths(jax.device_get(params))
            if rule(p, x)]
  total = sum(x.size for x in leaves)
  return sum(int(np.count_nonzero(x == 0)) for x in leaves) / total if total else 0.0


def resolve(task: Task, start, abstract) -> dict:
  """The distillation teacher's {'params', 'model_state'} (host or device
  arrays): the Distill's own, or the weights the run starts from."""
  d = task.distill
  try:
    distill_lib.check_model(d, task, abstract.params, abstract.model_state)
  except distill_lib.DistillError as e:
    raise SetupError(f'distill.{e.key}: {e}') from None
  params, model_state = d.teacher, d.teacher_model_state
  if params is None:
    if start is None:
      raise SetupError('distillation takes its teacher from the weights the run starts from '
                       '(Distill(teacher=None)), but this run starts from a fresh '
                       'initialisation: give the teacher params, or a Start')
    if task.schedule.needs_start:
      raise SetupError(f'distillation takes its teacher from the weights the run starts from, '
                       f'but {type(task.schedule).__name__} takes its mask from their zeros: '
                       'they are already pruned, so the teacher would be the pruned student. '
                       'Give the dense teacher params')
    params = start.params
    if model_state is None:
      model_state = start.model_state
  if model_state is None:
    model_state = task.initial_model_state()
  try:
    tree_lib.check_same_structure(params, abstract.params, 'the teacher params')
    tree_lib.check_same_structure(model_state, abstract.model_state, 'the teacher model state')
  except ValueError as e:
    raise SetupError(str(e)) from None
  return {'params': params, 'model_state': model_state}


def place(run):
  """The run's teacher on the devices, in the params' dtypes and shardings."""
  like = {'params': run.abstract.params, 'model_state': run.abstract.model_state}
  cast = lambda t: jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), t, like)
  return jax.jit(cast, out_shardings=run.teacher_sh)(run.teacher)
