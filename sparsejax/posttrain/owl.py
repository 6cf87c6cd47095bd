"""OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing
Secret Sauce for Pruning LLMs to High Sparsity"): per-block unstructured
sparsities from each block's share of outlier weights, so that blocks with
more outliers are pruned less.

The paper's Layerwise Outlier Distribution scores weights with Wanda's
metric A_ij = ||X_j||_2 * |W_ij| and counts, for layer (Transformer block) l,

  D_l = sum_ij 1[A^l_ij > M * mean(A^l)] / (C_in * C_out),

over all the block's pruned matrices together (one mean over their scores),
M = 5 by default (the paper tries M in 3..10). It then sets S_l = 1 - D_l,
kept within [S - lambda, S + lambda] with the average sparsity over layers
equal to the target S (lambda 0.02..0.08 in the paper; 0.08 at 70%). The
authors' code (luuyin/OWL, `prune_wanda_outlier`), which made the paper's
numbers, realises this as

  a_l = 2 * lambda * (D_l - min D) / (max D - min D)
  S_l = S - (a_l - mean_l a_l)

which is what `owl_sparsities` computes: the sparsities span exactly
2 * lambda, contain S, and average to S uniformly over layers (the paper's
"average sparsity across layers"; in a Llama all blocks hold the same number
of weights, so this is also the parameter-weighted mean). They fall in
[S - lambda, S + lambda] exactly when mean(a) = lambda; with a lopsided
distribution one end reaches towards S -/+ 2 * lambda * (1 - 1/n), as in the
reference. Equal D everywhere (the reference divides by zero) gives S for
every block. The statistics come from one pass of the dense model, block by
block, as in the reference (`calibrate`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class OWL:
  """OWL's settings: the outlier multiple `m` (M) and the half range `lam`
  (lambda), the reference's defaults at 70% sparsity (Hyper_m 5, Lamda 0.08)."""
  m: float = 5.0
  lam: float = 0.08

  def __post_init__(self):
    if not self.m > 0:
      raise ValueError(f'OWL m (the outlier multiple M) must be positive, got {self.m}')
    if not 0.0 <= self.lam < 0.5:
      raise ValueError(f'OWL lambda must be in [0, 0.5), got {self.lam}')


def outlier_ratio(scores: Sequence, m: float) -> float:
  """D_l: the fraction of all the scores (arrays of one block, taken
  together) above m times their common mean."""
  flat = jnp.concatenate([jnp.ravel(jnp.asarray(s, jnp.float32)) for s in scores])
  return float(jnp.mean(flat > m * jnp.mean(flat)))


def owl_sparsities(ratios: Sequence[float], sparsity: float, lam: float) -> np.ndarray:
  """Per-block sparsities S_l from the blocks' outlier ratios D_l (see the
  module docstring): a span of 2 * lam, mean `sparsity`, the most outliers
  pruned least. Raises when a block would leave [0, 1)."""
  d = np.asarray(ratios, np.float64)
  spread = d.max() - d.min() if d.size else 0.0
  a = np.zeros_like(d) if spread == 0 else 2.0 * lam * (d - d.min()) / spread
  out = sparsity - (a - a.mean())
  if out.size and (out.min() < 0.0 or out.max() >= 1.0):
    raise ValueError(f'OWL with lambda={lam} around {sparsity:g} gives block sparsities '
                     f'{out.min():.4f}..{out.max():.4f}, outside [0, 1); lower lambda')
  return out
