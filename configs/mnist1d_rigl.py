"""MNIST-1D MLP trained sparse from the start with RigL at 90% sparsity.

RigL (Evci et al. 2020): ERK allocation, a random initial mask, every 100
steps drop the smallest |w| among active weights and grow the largest |grad|
among inactive ones, drop fraction 0.3 decaying by a cosine to 0 at 75% of
training. The README's main job:

  sparsejax train --config configs/mnist1d_rigl.py --workdir runs/mnist1d_rigl
"""

import pathlib

from sparsejax.config import load_config


def get_config():
  c = load_config(pathlib.Path(__file__).with_name('mnist1d_mlp.py'))
  c.sparsity = 0.9
  c.pruning.schedule = 'rigl'
  c.pruning.allocation = 'erk'
  c.pruning.every = 100
  c.pruning.end = 1125
  c.pruning.drop_fraction = 0.3
  return c
