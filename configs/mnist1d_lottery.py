"""Lottery tickets on MNIST-1D, short: the README's main job (about 2 minutes).

The MLP 40-500-500-10 with residual connection of the MNIST-1D
lottery-ticket notebook (Greydanus & Kobak 2020): Adam, learning rate 2e-2,
batch 100, 1500 steps per level, weights reset to their initial values.
Each level prunes 37% of the remaining weights of every layer by magnitude,
so 10 levels reach 1% of the weights; a random mask with the same per-layer
sparsities is trained at every level as the control. Their result: dense
about 65% test accuracy, tickets at 90% sparsity about 74%, a random mask
at 90% about 60-66%. The full reproduction with 3 seeds is in
experiments/lottery_mnist1d.

  sparsejax lottery --config configs/mnist1d_lottery.py --workdir runs/lottery
"""

import pathlib

from sparsejax.config import load_config


def get_config():
  c = load_config(pathlib.Path(__file__).with_name('mnist1d_mlp.py'))
  c.lottery.levels = 10
  c.lottery.prune_fraction = 0.37
  c.lottery.rewind = 'init'
  c.lottery.controls = ('random_prune',)
  c.lottery.replicates = 1
  c.train.eval_every = 100
  c.train.checkpoint_every = 1500
  return c
