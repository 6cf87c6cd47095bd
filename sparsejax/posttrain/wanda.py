"""Pruning by scores, without weight updates: magnitude and Wanda.

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large
Language Models") scores weight W_ij by |W_ij| * ||X_j||_2, where X_j is
input feature j over all calibration tokens, and compares scores within each
output neuron (their "per-output" comparison group): every output neuron loses
the same number of weights. In a Flax kernel (in, out) an output neuron is a
column, so the norms scale the kernel's rows and the comparison runs down each
column. N:M keeps the n best of every m consecutive inputs of each output
neuron (axis -2 of the kernel). Magnitude, the baseline of both papers,
compares |W| over the whole layer (per-layer threshold) and keeps the
surviving weights unchanged, as Wanda does. Exact counts; equal scores keep
the lower index (see `target` for the rule and how the reference scripts
differ).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sparsejax.posttrain.target import Target, keep_top, pruned_count


def input_norms(gram: jax.Array) -> jax.Array:
  """||X_j||_2 for every input feature j, from the Gram matrix X^T X."""
  return jnp.sqrt(jnp.maximum(jnp.diagonal(jnp.asarray(gram, jnp.float32)), 0.0))


def wanda_scores(kernel: jax.Array, gram: jax.Array) -> jax.Array:
  """|W_ij| * ||X_j||_2 in the kernel's (in, out) layout."""
  return jnp.abs(jnp.asarray(kernel, jnp.float32)) * input_norms(gram)[:, None]


@functools.partial(jax.jit, static_argnames=('target', 'per_output'))
def mask_from_scores(scores: jax.Array, target: Target, per_output: bool = True) -> jax.Array:
  """Keep-mask of a kernel's scores: N:M along the inputs, or unstructured
  per output neuron (`per_output`) or over the whole layer."""
  scores = jnp.asarray(scores, jnp.float32)
  if target.nm is not None:
    return target.nm.select(scores)
  n_in = scores.shape[0]
  if per_output:
    return keep_top(scores, n_in - pruned_count(n_in, target.sparsity), axis=0)
  return keep_top(scores, scores.size - pruned_count(scores.size, target.sparsity))


def prune_wanda(kernel: jax.Array, gram: jax.Array, target: Target
                ) -> tuple[jax.Array, jax.Array]:
  """(pruned kernel, keep-mask) by Wanda's score, per output neuron."""
  target.check('kernel', kernel.shape)
  mask = mask_from_scores(wanda_scores(kernel, gram), target, per_output=True)
  return jnp.where(mask, kernel, jnp.zeros_like(kernel)), mask


def prune_magnitude(kernel: jax.Array, gram: jax.Array | None, target: Target
                    ) -> tuple[jax.Array, jax.Array]:
  """(pruned kernel, keep-mask) by |W| over the whole layer (N:M: per group).
  `gram` is unused; it is there so that every method has one signature."""
  del gram
  target.check('kernel', kernel.shape)
  mask = mask_from_scores(jnp.abs(jnp.asarray(kernel, jnp.float32)), target, per_output=False)
  return jnp.where(mask, kernel, jnp.zeros_like(kernel)), mask
