"""Post-training pruning of pretrained Transformers from calibration data:
magnitude, Wanda (Sun et al. 2023) and SparseGPT (Frantar & Alistarh 2023),
unstructured or N:M, layer by layer; unstructured sparsity uniform over the
blocks or allocated by OWL (Yin et al. 2024).

  params, masks, report = prune_model(model, params, batches, 'sparsegpt', nm='2:4')
  params, masks, report = prune_model(model, params, batches, 'wanda', sparsity=0.7,
                                      owl=OWL(m=5, lam=0.08))

Flax Linen models and Flax NNX models wrapped by `nnx_model` alike (their
nn.Dense / nnx.Linear layers; see `blocks`). Kernels are in Flax's (in, out)
layout throughout: the papers' output rows are kernel columns (see
`target`). The masks are the core's mask trees, ready for
`FixedMask(masks=masks)` fine-tuning.
"""

from sparsejax.posttrain.calibrate import BLOCKS, METHODS, prune_model
from sparsejax.posttrain.owl import OWL, outlier_ratio, owl_sparsities
from sparsejax.posttrain.sparsegpt import inverse_hessian_factor, prune_sparsegpt
from sparsejax.posttrain.target import Target, parse_nm, reconstruction_error
from sparsejax.posttrain.wanda import prune_magnitude, prune_wanda, wanda_scores

__all__ = ['BLOCKS', 'METHODS', 'OWL', 'Target', 'inverse_hessian_factor', 'outlier_ratio',
           'owl_sparsities', 'parse_nm', 'prune_magnitude', 'prune_model', 'prune_sparsegpt',
           'prune_wanda', 'reconstruction_error', 'wanda_scores']
