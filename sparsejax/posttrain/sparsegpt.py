"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can
Be Accurately Pruned in One-Shot"): prune and reconstruct a layer from the
calibration Hessian.

For the layer-wise objective ||W X - W' X||^2 the Hessian is H = 2 X X^T; we
damp it by `percdamp` times its mean diagonal and take the upper Cholesky
factor U of H^-1 (H^-1 = U^T U). Row j of U holds, for the inputs j.. that
are still unprocessed, the inverse Hessian that Optimal Brain Surgeon needs
when input j is eliminated next, so one left-to-right sweep over the inputs
prunes and compensates every output neuron at once: for input j, the weights
chosen for pruning are set to 0 and the error e = (w_j - q_j) / U_jj is
spread over the later inputs, W[:, j:] -= e U[j, j:] (paper layout). The
sweep runs over blocks of `blocksize` inputs; inside a block the updates are
applied input by input, and the later blocks get them in one matrix product
at the end of the block (the paper's lazy batch updates). The mask is chosen block by block
from the current weights by w^2 / U_jj^2 (the OBS error of removing w, with
[H^-1]_jj = U_jj^2 for the remaining inputs):

- unstructured, by default as the paper's Algorithm 1 and the authors'
  `fasterprune` do: jointly over all output neurons of the block of
  `blocksize` inputs, so neurons end at different sparsities (the layer at
  exactly the requested one). Two details differ from `fasterprune`, whose
  threshold is the sorted score at index int(k * sparsity) of the block's k
  weights and which prunes every score <= it: it prunes int(k * sparsity)
  + 1 weights per block (one more than the fraction) and every weight tied
  with the threshold; here the layer's exact count, round(sparsity * size),
  is spread over the blocks in proportion to their inputs, and ties at the
  threshold keep the lower (input, output) index. Without ties, and where
  the counts agree, the two give the same mask and weights
  (tests/test_posttrain.py transcribes `fasterprune` and checks it).
- `per_row=True`, a variant of ours: the same number of weights per output
  neuron in every block, so every output neuron ends at exactly the
  requested sparsity (Wanda's comparison group).
- N:M: the n best of each group of m inputs of each output neuron, chosen
  when the sweep reaches the group (ties keep the lower input index).

Inputs never seen in calibration ("dead") score 0, so they are pruned
first. `fasterprune` sets their Hessian diagonal to 1 and zeroes their
weights; here their diagonal is the mean of the others', which does not
depend on the Hessian's scale (1 does), and with it the damping
percdamp * mean(diag H) is the same whatever the inputs' scale. The two
coincide where the mean diagonal of H = 2 X^T X over the live inputs is 1.

Layout: the paper's W is (out, in) and sweeps over its columns; a Flax kernel
is (in, out), so here the sweep runs over the kernel's rows (input j is row
j), which keeps every step a contiguous row update. Weights in float32; H^-1
and its factor in float64 (numpy), then float32 for the sweep.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax

from sparsejax.core import select
from sparsejax.posttrain.target import Target, keep_top, pruned_count

_HIGHEST = lax.Precision.HIGHEST


def inverse_hessian_factor(gram, percdamp: float = 0.01) -> np.ndarray:
  """Upper-triangular U with U^T U = H^-1, H = 2 X^T X + percdamp * mean(diag) I
  (float64). Inputs never seen (zero diagonal) get the mean diagonal, which
  decouples them from the others.

  One Cholesky factorisation and one triangular inverse: with J the reversal,
  J H J = L L^T gives H = R R^T for the upper R = J L J, so U = R^-1.
  """
  h = 2.0 * np.array(gram, np.float64)
  diag = np.diag(h).copy()
  dead = diag <= 0
  if dead.all():
    raise ValueError('every input of the layer is zero on the calibration data')
  idx = np.flatnonzero(dead)
  h[idx, :] = 0.0
  h[:, idx] = 0.0
  h[idx, idx] = np.mean(diag[~dead])
  h[np.diag_indices_from(h)] += percdamp * np.mean(np.diag(h))
  try:
    r = np.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1]
  except np.linalg.LinAlgError:
    raise ValueError(f'the damped Hessian is not positive definite; raise percdamp '
                     f'(now {percdamp})') from None
  u, info = scipy.linalg.lapack.dtrtri(np.ascontiguousarray(r), lower=0)
  if info != 0:
    raise ValueError(f'the Hessian factor is singular (LAPACK dtrtri info={info})')
  return np.triu(u)


def _scores(w, u_diag, dead):
  """OBS error of removing each weight: w^2 / [H^-1]_jj^2 (inputs j on axis 0,
  the kernel layout); inputs never seen score 0."""
  s = jnp.square(w) / jnp.square(u_diag)[:, None]
  return jnp.where(dead[:, None], 0.0, s)


@functools.partial(jax.jit, static_argnames=('nm', 'per_row'))
def _sweep_block(w1, u1, dead1, n_prune, nm, per_row):
  """One block of inputs, in the kernel layout (width, out): (weights with
  zeros at the pruned ones, the scaled errors e for the lazy update, keep-mask)."""
  width, cols = w1.shape
  d = jnp.diagonal(u1)
  if nm is None:
    s = _scores(w1, d, dead1)
    prune = ~(keep_top(s, width - n_prune, axis=0) if per_row
              else keep_top(s, width * cols - n_prune))
    g = 1
  else:
    prune = jnp.zeros(w1.shape, bool)
    g = nm[1]

  def step(gi, carry):
    w1, err1, prune = carry
    i0 = gi * g
    if nm is not None:
      s = _scores(lax.dynamic_slice_in_dim(w1, i0, g), lax.dynamic_slice_in_dim(d, i0, g),
                  lax.dynamic_slice_in_dim(dead1, i0, g))
      prune = lax.dynamic_update_slice_in_dim(prune, ~select.NM(*nm, axis=0).select(s), i0, 0)
    for j in range(g):
      i = i0 + j
      w = lax.dynamic_index_in_dim(w1, i, keepdims=False)
      q = jnp.where(lax.dynamic_index_in_dim(prune, i, keepdims=False), 0.0, w)
      e = (w - q) / d[i]
      # U is upper-triangular: row i is zero left of i, so only inputs >= i move.
      u_row = lax.dynamic_index_in_dim(u1, i, keepdims=False)
      w1 = lax.dynamic_update_index_in_dim(w1 - u_row[:, None] * e[None, :], q, i, 0)
      err1 = lax.dynamic_update_index_in_dim(err1, e, i, 0)
    return w1, err1, prune

  w1, err1, prune = lax.fori_loop(0, width // g, step, (w1, jnp.zeros_like(w1), prune))
  return w1, err1, ~prune


def prune_sparsegpt(kernel: jax.Array, gram, target: Target, *, percdamp: float = 0.01,
                    blocksize: int = 128, per_row: bool = False
                    ) -> tuple[jax.Array, jax.Array]:
  """(pruned and reconstructed kernel, keep-mask) of a Flax kernel (in, out)
  from the Gram matrix X^T X (in, in) of its calibration inputs; unstructured
  masks jointly over each block of inputs (the paper's) unless `per_row`."""
  target.check('kernel', kernel.shape)
  n_in = kernel.shape[0]
  nm = None if target.nm is None else (target.nm.n, target.nm.m)
  if per_row and nm is not None:
    raise ValueError('per_row applies to unstructured SparseGPT; N:M is per group already')
  if blocksize < 1 or (nm is not None and blocksize % nm[1]):
    raise ValueError(f'blocksize={blocksize} must be a positive multiple of M')
  u = jnp.asarray(inverse_hessian_factor(gram, percdamp), jnp.float32)
  dead = jnp.asarray(np.diag(np.asarray(gram)) <= 0)
  w = jnp.asarray(kernel, jnp.float32)
  total = 0
  if nm is None:
    total = pruned_count(n_in if per_row else kernel.size, target.sparsity)
  q_blocks, keep_blocks = [], []
  for i1 in range(0, n_in, blocksize):
    i2 = min(i1 + blocksize, n_in)
    n_prune = total * i2 // n_in - total * i1 // n_in   # exact total over the blocks
    q1, err1, keep1 = _sweep_block(w[i1:i2], u[i1:i2, i1:i2], dead[i1:i2],
                                   jnp.int32(n_prune), nm, per_row)
    if i2 < n_in:   # the lazy batch update of all later inputs
      w = w.at[i2:].add(-jnp.matmul(u[i1:i2, i2:].T, err1, precision=_HIGHEST))
    q_blocks.append(q1)
    keep_blocks.append(keep1)
  return jnp.concatenate(q_blocks).astype(kernel.dtype), jnp.concatenate(keep_blocks)
