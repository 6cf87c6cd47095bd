"""The train state and the pure train and evaluation steps.

Both steps are plain functions of (state, batch) built from a `Task` (its
loss and model); `compile_train_step` / `compile_eval_step` jit them
with explicit in/out shardings over the mesh and donates the state, which is
the modern form of pjit. With a `sparsify(..., update='separate')` optimizer
the train step compiles twice: the plain program, and the one that updates
the masks (`update_masks=True`), run only on the schedule's update steps. Randomness (dropout) comes from
`fold_in(rng, step)`, so a resumed run draws exactly what an uninterrupted
one would. A task that distills (`Task.distill`) takes the teacher's weights
as a third argument of the same step: an input, sharded like the params,
never donated or updated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax.train import sharding as sharding_lib

PyTree = Any


class TrainState(NamedTuple):
  step: jax.Array          # int32 scalar: steps done
  params: PyTree
  model_state: PyTree      # other variable collections, e.g. {'batch_stats': ...}
  opt_state: PyTree        # holds the masks (sparsify's state)
  rng: jax.Array           # uint32 key data of the run's base key


def make_train_step(task, tx: optax.GradientTransformation) -> Callable:
  """train_step(state, batch, teacher=None, update_masks=None) -> (state,
  metrics vector): loss, the task's metrics, grad_norm and finite, stacked
  into one small array (one transfer when fetched) whose names
  `train_step.names` holds once it has been traced. `teacher`
  ({'params', 'model_state'}) is the distillation teacher of a task that
  distills. `update_masks` (a Python bool, or None to pass nothing) goes to
  `tx.update` for `sparsify(..., update='separate')`."""
  names: list[str] = []

  def train_step(state: TrainState, batch, teacher=None, update_masks: bool | None = None):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      return task.train_loss(params, state.model_state, batch, key, teacher=teacher)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    flag = {} if update_masks is None else {'update_masks': update_masks}
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss, **flag)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics = {'loss': loss, **metrics, 'grad_norm': grad_norm,
               'finite': finite.astype(jnp.float32)}
    names[:] = list(metrics)
    vector = jnp.stack([jnp.asarray(v, jnp.float32) for v in metrics.values()])
    return TrainState(state.step + 1, params, model_state, opt_state, state.rng), vector

  train_step.names = names
  return train_step


def make_eval_step(task) -> Callable:
  """eval_step(params, model_state, (x, y, weight)) -> sums of loss, metrics and count."""
  return task.eval_sums


def compile_train_step(train_step, mesh, state_sh, x_nd: int, y_nd: int,
                       update_masks: bool | None = None, teacher_sh=None):
  """The train step jitted with explicit shardings, donating the state;
  `update_masks` is fixed in the program (see `make_train_step`). With
  `teacher_sh` (the teacher's shardings) it takes the teacher as its third
  argument: step(state, batch, teacher)."""
  b = lambda nd: sharding_lib.batch_sharding(mesh, nd)
  if update_masks is not None:
    train_step = functools.partial(train_step, update_masks=update_masks)
  in_sh = (state_sh, (b(x_nd), b(y_nd)))
  if teacher_sh is not None:
    in_sh = (*in_sh, teacher_sh)
  return jax.jit(train_step, in_shardings=in_sh,
                 out_shardings=(state_sh, sharding_lib.replicated(mesh)),
                 donate_argnums=(0,))


def compile_eval_step(eval_step, mesh, state_sh, x_nd: int, y_nd: int):
  """The eval step jitted with the batch split over 'data'."""
  b = lambda nd: sharding_lib.batch_sharding(mesh, nd)
  return jax.jit(eval_step, in_shardings=(state_sh.params, state_sh.model_state,
                                          (b(x_nd), b(y_nd), b(1))),
                 out_shardings=sharding_lib.replicated(mesh))
