"""Pruning criteria: pure functions from params (and gradients) to scores.

Higher score = more important = kept. Every criterion returns a pytree shaped
like `params`; scores of non-prunable leaves are computed too and ignored.

Criteria that only need (params, grads, key) share one signature and can run
inside a schedule's mask update; GraSP and SynFlow need a loss or model
function and are run before training (see `at_init.AtInit`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sparsejax.core.imports import resolve


def magnitude(params, grads=None, key=None):
  """|w| (Han et al. 2015; the IMP criterion of Frankle & Carbin 2019)."""
  del grads, key
  return jax.tree.map(jnp.abs, params)


def random(params, grads=None, key=None):
  """Uniform random scores; leaf i draws from fold_in(key, i)."""
  del grads
  if key is None:
    raise ValueError("the 'random' criterion needs a PRNG key")
  leaves, treedef = jax.tree.flatten(params)
  out = [jax.random.uniform(jax.random.fold_in(key, i), p.shape, jnp.float32)
         for i, p in enumerate(leaves)]
  return jax.tree.unflatten(treedef, out)


def _need_grads(name, grads):
  if grads is None:
    raise ValueError(f'the {name!r} criterion needs gradients')


def gradient(params, grads=None, key=None):
  """|g|: the growth criterion of RigL (Evci et al. 2020)."""
  del params, key
  _need_grads('gradient', grads)
  return jax.tree.map(jnp.abs, grads)


def snip(params, grads=None, key=None):
  """Connection sensitivity |w * g| (Lee et al. 2019, SNIP)."""
  del key
  _need_grads('snip', grads)
  return jax.tree.map(lambda w, g: jnp.abs(w * g), params, grads)


def taylor(params, grads=None, key=None):
  """First-order Taylor estimate of the loss change (w * g)^2 (Molchanov et al. 2019)."""
  del key
  _need_grads('taylor', grads)
  return jax.tree.map(lambda w, g: jnp.square(w * g), params, grads)


def movement(params, grads=None, key=None):
  """-w * g: positive when training moves w away from 0 (Sanh et al. 2020).

  Movement pruning accumulates this over steps; one step's value is returned.
  """
  del key
  _need_grads('movement', grads)
  return jax.tree.map(lambda w, g: -w * g, params, grads)


CRITERIA: dict[str, Callable] = {
    'magnitude': magnitude, 'random': random, 'gradient': gradient,
    'snip': snip, 'taylor': taylor, 'movement': movement,
}


def get_criterion(name: str | Callable) -> Callable:
  """A criterion by name, by import path 'pkg.module:fn' (scores = fn(params,
  grads, key)), or a callable passed through."""
  if callable(name):
    return name
  return resolve(name, CRITERIA, 'pruning criterion',
                 note='GraSP and SynFlow run before training: see AtInit')


# --- data- or model-dependent criteria used at initialisation -------------------

def snip_scores(loss_fn: Callable, params, batch):
  """SNIP scores from one batch: |w * dL/dw| with loss_fn(params, batch)."""
  return snip(params, jax.grad(loss_fn)(params, batch))


def grasp_scores(loss_fn: Callable, params, batch):
  """GraSP (Wang et al. 2020): keep score w * (H g).

  GraSP removes the weights with the largest `-w*(Hg)`, the ones whose removal
  would reduce gradient flow the least; keeping the largest `w*(Hg)` is the same
  choice. Hg is a Hessian-vector product on `batch` with g held fixed.
  """
  grad_fn = jax.grad(loss_fn)
  g = jax.lax.stop_gradient(grad_fn(params, batch))
  _, hg = jax.jvp(lambda p: grad_fn(p, batch), (params,), (g,))
  return jax.tree.map(lambda w, h: w * h, params, hg)


def synflow_scores(apply_fn: Callable, params, input_shape, masks=None):
  """SynFlow (Tanaka et al. 2020): |w * dR/dw| with R = sum f(1; |w|), data-free.

  apply_fn(params, x) must be the model's forward pass (eval mode, no
  dropout). Runs in float32; for very deep nets R can overflow, in which case
  scale the input down (the ranking is unchanged for bias-free ReLU nets).
  """
  def r(p):
    p = jax.tree.map(jnp.abs, p)
    if masks is not None:
      p = jax.tree.map(lambda w, m: w if m is None else jnp.where(m, w, 0), p, masks)
    return jnp.sum(apply_fn(p, jnp.ones(input_shape, jnp.float32)))
  g = jax.grad(r)(params)
  return jax.tree.map(lambda w, gg: jnp.abs(w * gg), params, g)
