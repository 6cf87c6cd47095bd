"""MNIST-1D MLP with iterative magnitude pruning inside one training run.

The `imp` schedule module: 5 rounds of 1500 steps; at the end of each round
37% of each layer's remaining weights are pruned by magnitude, the weights
go back to their initial values under the new mask and Adam starts afresh.
After the 5th round (90% sparse, 1 - 0.63^5) the last 1500 steps train the
ticket. Swap `pruning.schedule` for 'rigl' to compare dynamic sparse training
at a similar budget.

  sparsejax train --config configs/mnist1d_imp.py --workdir runs/mnist1d_imp
"""

import pathlib

from sparsejax.config import load_config


def get_config():
  c = load_config(pathlib.Path(__file__).with_name('mnist1d_mlp.py'))
  c.pruning.schedule = 'imp'
  c.pruning.every = 1500
  c.pruning.rounds = 5
  c.pruning.prune_fraction = 0.37
  c.pruning.rewind_step = 0
  c.train.steps = 9000
  c.train.eval_every = 1500
  c.train.checkpoint_every = 1500
  return c
