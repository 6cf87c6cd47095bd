"""What a post-training pruner aims at, and how well it did.

Layout: a Flax Dense kernel is (in_features, out_features). The papers write a
linear layer as W (out, in) acting on X (in, tokens), so the "output row" i of
W in Sun et al. 2023 (Wanda) and Frantar & Alistarh 2023 (SparseGPT) is
column i of a Flax kernel, and their "input column" j is row j of the kernel.
Every function in this package takes and returns kernels in Flax's layout;
`gram` is always X^T X over calibration tokens, shape (in, in).

Ties. Every selection here prunes an exact count and, among equal scores,
keeps the lower index: the lower input index within an output neuron (Wanda,
SparseGPT per_row) or an N:M group (all methods, `select.NM`), the lower
flat index of the kernel, input-major, over a whole layer (magnitude) or a
SparseGPT block, the core's rule (`select.topk_mask`). -0.0 and +0.0 tie; w
and -w tie under magnitude. This matters for quantized checkpoints: GGUF
Q4_1 has 16 levels per block of 32 weights: in SmolLM2-135M's 210 block
matrices 15.3% of the 2:4 groups tie between their second and third largest
magnitudes (40% hold some tie), so the rule decides which weight survives
there, and it moves magnitude 2:4 perplexity (by 13% in the team's design
notes). The reference scripts differ from each other, and from us: Wanda's
sorts scores ascending with a stable sort and prunes the first k (among ties
it prunes the lower index); magnitude's and SparseGPT's prune every score <=
a sorted threshold (all ties at it, so more than the count); their N:M use
torch.topk, whose order among ties is not specified.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import select


def parse_nm(nm) -> select.NM | None:
  """'2:4', (2, 4) or an NM -> NM(n, m) along a kernel's input axis (-2)."""
  if nm is None or isinstance(nm, select.NM):
    return nm
  if isinstance(nm, str):
    parts = nm.split(':')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
      raise ValueError(f"N:M pattern must look like '2:4', got {nm!r}")
    nm = tuple(int(p) for p in parts)
  n, m = nm
  return select.NM(int(n), int(m), axis=-2)


@dataclasses.dataclass(frozen=True)
class Target:
  """Unstructured `sparsity` (a fraction in [0, 1)) or an N:M pattern (n of
  every m consecutive input weights of an output neuron kept); exactly one."""
  sparsity: float | None = None
  nm: select.NM | None = None

  def __post_init__(self):
    object.__setattr__(self, 'nm', parse_nm(self.nm))
    if (self.sparsity is None) == (self.nm is None):
      raise ValueError('give exactly one of sparsity (e.g. 0.5) or nm (e.g. 2:4)')
    if self.sparsity is not None and not 0.0 <= float(self.sparsity) < 1.0:
      raise ValueError(f'sparsity must be in [0, 1), got {self.sparsity}')
    if self.nm is not None and self.nm.axis != -2:
      raise ValueError('N:M groups run along the input axis of a kernel (axis=-2)')

  @property
  def fraction(self) -> float:
    """The fraction of weights pruned."""
    return float(self.sparsity) if self.nm is None else self.nm.sparsity

  def check(self, path: str, shape) -> None:
    if len(shape) != 2:
      raise ValueError(f'post-training pruning takes 2-D Dense kernels; {path!r} has '
                       f'shape {tuple(shape)}')
    if self.nm is not None:
      self.nm.check(path, tuple(shape))

  def describe(self) -> str:
    return f'{self.nm.n}:{self.nm.m}' if self.nm is not None else f'{self.sparsity:g}'


def pruned_count(n: int, sparsity: float) -> int:
  """Weights pruned of n, rounded as the core's `select.keep_count` rounds
  (half to even in float32, at least one kept), computed on the host."""
  kept = n - int(np.round(np.float32(sparsity) * np.float32(n)))
  return n - min(max(kept, min(1, n)), n)


def keep_top(scores: jax.Array, keep, axis: int | None = None) -> jax.Array:
  """Mask of the `keep` highest scores along `axis` (None: over the whole
  array, flat row-major index); ties keep the lower index, as
  `select.topk_mask` does (a stable sort of the negated scores). `keep` may
  be traced. Ranking by sort: this runs once per layer, where a sort compiles
  in a fraction of the time of the core's radix select."""
  if axis is None:
    return keep_top(scores.reshape(-1), keep, 0).reshape(scores.shape)
  order = jnp.argsort(-scores, axis=axis, stable=True)
  return jnp.argsort(order, axis=axis) < keep


def reconstruction_error(kernel, pruned, gram) -> tuple[float, float]:
  """(||X W - X W'||^2, that over ||X W||^2) from the Gram matrix X^T X: the
  layer-wise objective both papers minimise, in float64."""
  w = np.asarray(kernel, np.float64)
  d = w - np.asarray(pruned, np.float64)
  g = np.asarray(gram, np.float64)
  err = float(np.sum(d * (g @ d)))
  ref = float(np.sum(w * (g @ w)))
  return err, err / ref if ref > 0 else float('nan')
