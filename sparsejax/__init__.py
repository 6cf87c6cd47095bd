"""sparsejax: sparse training and sparse fine-tuning in JAX.

The names most users need are re-exported here; each lives in the
`sparsejax.core` module named for what it holds.
"""

from sparsejax.core.allocation import Allocation, erk_sparsities
from sparsejax.core.compact import CompactMaskedState, compact_masked
from sparsejax.core.criteria import CRITERIA, get_criterion
from sparsejax.core.dynamic import SET, RigL
from sparsejax.core.imp import IMP, prune_remaining, rewind, same_counts
from sparsejax.core.masks import (apply_masks, count_active, dense_masks, layer_density,
                                  masks_from_zeros, overall_density, overall_sparsity,
                                  overlap, total_active, validate_masks)
from sparsejax.core.movement import Movement
from sparsejax.core.prune import prune
from sparsejax.core.registry import SCHEDULES, make_schedule
from sparsejax.core.at_init import AtInit, at_init
from sparsejax.core.schedules import Dense, FixedMask, Gradual, OneShot, Schedule
from sparsejax.core.select import NM, Block, Structured, Unstructured, make_pattern, topk_mask
from sparsejax.core.ste import STE
from sparsejax.core.transform import SparsityState, get_masks, masked_params, sparsify
from sparsejax.core.tree import PrunableRule

__version__ = '0.1.0'
