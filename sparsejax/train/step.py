"""The train state and the pure train and evaluation steps.

Both steps are plain functions of (state, batch); `compile_steps` jits them
with explicit in/out shardings over the mesh and donates the state, which is
the modern form of pjit. Randomness (dropout) comes from
`fold_in(rng, step)`, so a resumed run draws exactly what an uninterrupted
one would.
"""

from __future__ import annotations

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


def cross_entropy(logits, labels, weights=None):
  """(sum of losses, sum of correct, sum of weights) over all positions.

  Works for classification (logits (B, C), labels (B,)) and language models
  (logits (B, T, V), labels (B, T)); `weights` (B,) masks padded examples.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  w = jnp.ones(labels.shape[:1], jnp.float32) if weights is None else weights
  w = jnp.broadcast_to(w.reshape(w.shape + (1,) * (labels.ndim - 1)), labels.shape)
  return jnp.sum(losses * w), jnp.sum(correct * w), jnp.sum(w)


def forward(apply_fn: Callable, params, model_state, x, train: bool, key=None):
  """Model output, and the updated model state in train mode."""
  variables = {'params': params, **model_state}
  rngs = {'dropout': key} if key is not None else None
  if train and model_state:
    out, new_state = apply_fn(variables, x, train=True, rngs=rngs, mutable=list(model_state))
    return out, dict(new_state)
  return apply_fn(variables, x, train=train, rngs=rngs), model_state


METRICS = ('loss', 'accuracy', 'grad_norm', 'finite')


def make_train_step(apply_fn: Callable, tx: optax.GradientTransformation) -> Callable:
  """train_step(state, (x, y)) -> (state, metrics vector named by METRICS)."""

  def train_step(state: TrainState, batch):
    x, y = batch
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      out, model_state = forward(apply_fn, params, state.model_state, x, True, key)
      loss_sum, correct, n = cross_entropy(out, y)
      return loss_sum / n, (correct / n, model_state)

    (loss, (acc, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # One small vector per step (names in METRICS): cheap to fetch in bulk.
    metrics = jnp.stack([loss, acc, grad_norm, finite.astype(jnp.float32)])
    return TrainState(state.step + 1, params, model_state, opt_state, state.rng), metrics

  return train_step


def make_eval_step(apply_fn: Callable) -> Callable:
  """eval_step(params, model_state, (x, y, weight)) -> sums of loss, correct, count."""

  def eval_step(params, model_state, batch):
    x, y, w = batch
    out, _ = forward(apply_fn, params, model_state, x, False)
    loss_sum, correct, n = cross_entropy(out, y, w)
    return {'loss_sum': loss_sum, 'correct': correct, 'count': n}

  return eval_step


def compile_train_step(train_step, mesh, state_sh, x_nd: int, y_nd: int):
  """The train step jitted with explicit shardings, donating the state."""
  b = lambda nd: sharding_lib.batch_sharding(mesh, nd)
  return jax.jit(train_step, in_shardings=(state_sh, (b(x_nd), b(y_nd))),
                 out_shardings=(state_sh, sharding_lib.replicated(mesh)),
                 donate_argnums=(0,))


def compile_eval_step(eval_step, mesh, state_sh, x_nd: int, y_nd: int):
  """The eval step jitted with the batch split over 'data'."""
  b = lambda nd: sharding_lib.batch_sharding(mesh, nd)
  return jax.jit(eval_step, in_shardings=(state_sh.params, state_sh.model_state,
                                          (b(x_nd), b(y_nd), b(1))),
                 out_shardings=sharding_lib.replicated(mesh))
