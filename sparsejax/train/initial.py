"""A run's optimizer and its state at step 0, as pure functions of the task.

`loop.build` calls them; they live apart so that the shared initialisation
(a fixed mask as an argument, `compiled.init_program`) and the run's own one
are the same code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sparsejax.core import compact as compact_lib, protocol, transform
from sparsejax.train import step as step_lib
from sparsejax.train.task import SetupError, Task


def make_tx(task: Task, schedule, start_params=None):
  """The run's optimizer: `task.optimizer` under `sparsify` with `schedule`
  (compact state for the mask of `start_params`, or of a fresh init)."""
  inner = task.optimizer
  if task.optimizer_state == 'compact':
    inner = compact_lib.compact_masked(inner, fixed_masks(task, schedule, start_params))
  tx = transform.sparsify(inner, schedule, task.rule, update='separate',
                          pack_masks=task.pack_masks)
  if task.accumulate > 1:   # outermost, so the schedule counts real updates
    steps = optax.MultiSteps(tx, every_k_schedule=task.accumulate)
    tx = optax.GradientTransformationExtraArgs(steps.init, steps.update)   # keeps value=
  return tx


def init_state(task: Task, tx, key, start_params=None, start_model_state=None):
  """The state at step 0 (pure): fresh params, or `start_params` (and model
  state) when given, the optimizer state of `tx` and the masks applied."""
  init_key, run_key = jax.random.split(key)
  variables = task.init_variables(init_key)
  params = variables.pop('params')
  if start_params is not None:
    params = jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), start_params, params)
    if start_model_state is not None:
      variables = dict(start_model_state)
  opt_state = tx.init(params)
  params = transform.masked_params(params, opt_state)
  return step_lib.TrainState(jnp.zeros([], jnp.int32), params, variables, opt_state,
                             jax.random.key_data(run_key))


def fixed_masks(task: Task, schedule, start_params=None):
  """The run's masks on the host, for compact optimizer state: known before
  training only when the schedule never changes them."""
  if schedule.changes_mask or protocol.is_rewinding(schedule):
    raise SetupError(f"optimizer_state='compact' stores state for a fixed set of kept "
                     f'weights, but the {type(schedule).__name__} schedule changes the mask: '
                     "use a fixed mask (fine-tuning, lottery levels) or optimizer_state='dense'")
  params = start_params
  if params is None:
    params = jax.jit(task.init_variables)(jax.random.key(task.loop.seed))['params']
  return jax.device_get(jax.jit(lambda p: schedule.init(p, task.rule)[0])(params))
