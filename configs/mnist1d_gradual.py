"""MNIST-1D MLP with gradual magnitude pruning to 90% sparsity.

Zhu & Gupta (2017): the sparsity follows a cubic curve from 0 at step 150 to
90% at step 1050, with a mask update every 100 steps.

  sparsejax train --config configs/mnist1d_gradual.py --workdir runs/mnist1d_gradual
"""

import pathlib

from sparsejax.config import load_config


def get_config():
  c = load_config(pathlib.Path(__file__).with_name('mnist1d_mlp.py'))
  c.sparsity = 0.9
  c.pruning.schedule = 'gradual'
  c.pruning.start = 150
  c.pruning.end = 1050
  c.pruning.every = 100
  return c
