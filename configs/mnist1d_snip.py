"""MNIST-1D MLP pruned at initialisation by SNIP to 90% sparsity.

SNIP (Lee et al. 2019): connection sensitivity |w * dL/dw| on one batch of
training data before the first step, then the mask stays fixed. Swap
`pruning.criterion` for 'grasp', 'synflow' or 'random'.

  sparsejax train --config configs/mnist1d_snip.py --workdir runs/mnist1d_snip
"""

import pathlib

from sparsejax.config import load_config


def get_config():
  c = load_config(pathlib.Path(__file__).with_name('mnist1d_mlp.py'))
  c.sparsity = 0.9
  c.pruning.schedule = 'at_init'
  c.pruning.criterion = 'snip'
  return c
