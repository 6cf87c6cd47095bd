"""FLOPs of sparse models and of sparse training, counted as the RigL paper
counts them (Evci et al. 2020, "Rigging the Lottery: Making All Tickets
Winners", ICML 2020, arXiv:1911.11134, Appendix H "Calculating FLOPs of
models and methods").

Inference. Appendix H: "In order to calculate FLOPs needed for a single
forward pass of a sparse model, we count the total number of multiplications
and additions layer by layer for a given layer sparsity s^l. The total FLOPs
is then obtained by summing up all of these multiply and adds." A
multiply-add is therefore 2 FLOPs (`FLOPS_PER_MAC`): the paper's dense
ResNet-50 costs 8.2e9 FLOPs, twice its 4.1e9 multiply-adds. A layer with
kernel K applied at P output positions costs 2 * prod(K.shape) * P dense, and
(its density) times that sparse; layers without a mask count dense. Only the
products of weight kernels are counted (Dense and convolution layers): bias
adds, activations, normalisation, pooling and attention's activation-by-
activation products are left out, as the paper leaves out batch normalisation.

Training. Appendix H: "we count backward passes as two times the
computational expense of the forward pass", the gradient of the activations
and the gradient of the parameters, so a step costs 3 f_S per example (f_S
the sparse forward FLOPs, f_D the dense ones): "Static Sparse and Dense.
Scales with `3*f_S` and `3*f_D` FLOPs, respectively"; "Pruning. `E_t[3*f_D*(1-s_t)]`
FLOPs where s_t is the sparsity of the model at iteration t"; "SET. ... the
total FLOPs for SET scales with `3*f_S`"; "SNFS. Forward pass and
back-propagating the error signal needs `2*f_S` FLOPs. However, the dense
gradient needs to be calculated at every iteration. Thus, the total number of
FLOPs scales with `2*f_S+f_D`"; "RigL. Iterations with no connection updates
need `3*f_S` FLOPs. However, at every Delta T iteration we need to calculate
the dense gradients. This results in the average FLOPs for RigL given by
`(3*f_S*Delta T+2*f_S+f_D)/(Delta T+1)`."

`train_flops` integrates this over the steps of a run: step t costs
2 f_S(t) + f_S(t), or 2 f_S(t) + f_D on a step whose update reads the dense
weight gradient, with f_S(t) from the per-layer densities of the mask that
step trains with. It gives the paper's closed forms for static, dense, SET and
pruning runs; for RigL, the paper's average counts one dense-gradient step per
Delta T + 1 steps, a run with an update every Delta T steps has one per
Delta T (the two differ by (f_D - f_S) / (Delta T (Delta T + 1)) per step).
The paper's forms are here too (`paper_*`), to check against.

Against the paper (tests/test_flops.py): ResNet-50 on 224x224 images counts
8.18e9 dense FLOPs (paper: 8.2e9), and sparsejax's allocations give the
paper's inference ratios within 0.01 (but for uniform at 90% sparsity: its
table's 0.10x is what pruning the first layer too gives; the authors' README
has 0.13x, and so does this count). Its uniform distribution keeps the
first layer dense (Section 3: "we keep the first layer dense"), which
sparsejax's 'uniform' does only with an override ({'^conv1/': 0.0}); ERK
covers every layer, the first conv and the classifier included, in both. The
authors' counting code (MicroNet's) also adds a bias add and an activation
per output element, and XLA's `cost_analysis` counts those too and leaves out
the taps of a convolution that fall on its padding; this module counts
neither.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Mapping, Sequence

from sparsejax.core import dynamic, ste

FLOPS_PER_MAC = 2   # a multiply-add is a multiplication and an addition (Appendix H)
GRADIENT_MODES = ('never', 'updates', 'always')


def kernel_flops(kernel_shape: Sequence[int], positions: int = 1) -> int:
  """Dense forward FLOPs of a kernel applied at `positions` output positions
  (a Dense layer: the positions are the tokens of an example, 1 for a flat
  input; a convolution: the output pixels, H_out * W_out). A convolution's
  kernel (kh, kw, c_in / groups, c_out) makes kh * kw * c_in * c_out / groups
  multiply-adds per output pixel, padding taps included, as the paper counts."""
  return FLOPS_PER_MAC * math.prod(int(d) for d in kernel_shape) * int(positions)


def forward_flops(layer_flops: Mapping[str, float],
                  densities: Mapping[str, float] | None = None) -> float:
  """Forward FLOPs per example: sum over layers of density x dense FLOPs (a
  layer without a density counts dense)."""
  densities = densities or {}
  return float(sum(f * float(densities.get(p, 1.0)) for p, f in layer_flops.items()))


def inference(layer_flops: Mapping[str, float], densities: Mapping[str, float]) -> dict:
  """Per-example inference FLOPs, dense and sparse, in total and per layer."""
  dense = forward_flops(layer_flops)
  sparse = forward_flops(layer_flops, densities)
  per_layer = {p: {'dense': float(f), 'sparse': float(f) * float(densities.get(p, 1.0)),
                   'ratio': float(densities.get(p, 1.0))} for p, f in layer_flops.items()}
  return {'inference_dense': dense, 'inference_sparse': sparse,
          'inference_ratio': sparse / dense if dense else 1.0, 'per_layer': per_layer}


def step_flops(f_sparse: float, f_dense: float, dense_gradient: bool = False) -> float:
  """FLOPs of one training step per example: the forward pass and the
  gradient of the activations at the sparse cost, the gradient of the weights
  sparse, or dense where the step reads the dense gradient (RigL's updates)."""
  return 2.0 * f_sparse + (f_dense if dense_gradient else f_sparse)


def _history(history) -> list[tuple[int, Mapping[str, float]]]:
  """Sorted (step, densities), the last of equal steps kept."""
  by_step = {}
  for step, dens in history:
    by_step[int(step)] = dens
  return sorted(by_step.items())


def train_flops(layer_flops: Mapping[str, float],
                history: Iterable[tuple[int, Mapping[str, float]]], steps: int,
                dense_gradient_steps: Iterable[int] = (),
                examples_per_step: int = 1) -> float:
  """Training FLOPs of `steps` steps (0-based 0 .. steps - 1).

  `history` holds (step, {layer: density}): the mask that trains from that
  step on (its first entry also covers the steps before it). Steps in
  `dense_gradient_steps` compute the dense weight gradient (`step_flops`).
  """
  history = _history(history)
  if not history:
    history = [(0, {})]
  f_dense = forward_flops(layer_flops)
  dense_steps = sorted({int(s) for s in dense_gradient_steps if 0 <= int(s) < steps})
  total = 0.0
  for i, (_, dens) in enumerate(history):
    lo = 0 if i == 0 else min(history[i][0], steps)
    hi = history[i + 1][0] if i + 1 < len(history) else steps
    hi = min(max(hi, lo), steps)
    if hi <= lo:
      continue
    f_sparse = forward_flops(layer_flops, dens)
    n_dense = bisect.bisect_left(dense_steps, hi) - bisect.bisect_left(dense_steps, lo)
    total += (hi - lo) * 3.0 * f_sparse + n_dense * (f_dense - f_sparse)
  return total * examples_per_step


def train_summary(layer_flops: Mapping[str, float], history, steps: int,
                  dense_gradient_steps: Iterable[int] = (), examples_per_step: int = 1) -> dict:
  """train_total, train_dense_equivalent (3 f_D per example and step) and their ratio."""
  total = train_flops(layer_flops, history, steps, dense_gradient_steps, examples_per_step)
  dense = 3.0 * forward_flops(layer_flops) * steps * examples_per_step
  return {'train_total': total, 'train_dense_equivalent': dense,
          'train_ratio': total / dense if dense else 1.0}


def dense_gradients(schedule) -> str:
  """When a schedule's updates read the dense weight gradient, as Appendix H
  counts it: 'updates' (RigL's gradient growth), 'always' (straight-through
  training, whose dense shadow weights take the gradient of every weight on
  every step, like SNFS), or 'never'. A schedule class may say so itself with
  an attribute `dense_gradients`. Movement pruning reads -g * w, which is 0
  at pruned weights (they are held at 0), so it needs no dense gradient; SNIP
  and the other criteria at initialisation read one dense gradient, which the
  paper omits as negligible."""
  own = getattr(schedule, 'dense_gradients', None)
  if own is not None:
    if own not in GRADIENT_MODES:
      raise ValueError(f'{type(schedule).__name__}.dense_gradients must be one of '
                       f'{list(GRADIENT_MODES)}, got {own!r}')
    return own
  if isinstance(schedule, dynamic.RigL) and schedule.grow == 'gradient':
    return 'updates'
  if isinstance(schedule, ste.STE):
    return 'always'
  return 'never'


# -- the paper's closed forms (Appendix H), per example and step ---------------

def paper_dense(f_dense: float) -> float:
  return 3.0 * f_dense


def paper_static(f_sparse: float) -> float:
  """Static sparse, SNIP and SET: 3 f_S."""
  return 3.0 * f_sparse


def paper_snfs(f_sparse: float, f_dense: float) -> float:
  return 2.0 * f_sparse + f_dense


def paper_rigl(f_sparse: float, f_dense: float, delta_t: int) -> float:
  """(3 f_S Delta T + 2 f_S + f_D) / (Delta T + 1)."""
  return (3.0 * f_sparse * delta_t + 2.0 * f_sparse + f_dense) / (delta_t + 1)


def paper_pruning(f_dense: float, sparsities: Sequence[float]) -> float:
  """E_t[3 f_D (1 - s_t)] over the steps' sparsities s_t."""
  return 3.0 * f_dense * (1.0 - sum(sparsities) / len(sparsities))
