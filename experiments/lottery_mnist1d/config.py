"""Lottery tickets on MNIST-1D, the reproduction (3 seeds, 21 levels).

Greydanus & Kobak 2020 ("Scaling down deep learning with MNIST-1D",
lottery-ticket notebook): MLP 40-500-500-10 with residual connection, Adam
lr 2e-2, batch 100, 1501 steps per round, weights reset to their initial
values. Their numbers: dense about 65%; tickets at 90% sparsity about 74%
(two trials: 74.3, 74.1); a random mask at 90% about 60-66%; collapse to
about 42% at 99%.

Here: 1500 steps per level, 20% of the remaining weights of each layer
pruned per level (21 levels reach 0.9% of the weights), a random mask with
the ticket's per-layer sparsities as the control at every level, 3 seeds.

  sparsejax lottery --config experiments/lottery_mnist1d/config.py --workdir runs/exp
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'


def get_config():
  c = load_config(CONFIGS / 'mnist1d_mlp.py')
  c.lottery.levels = 21
  c.lottery.prune_fraction = 0.2
  c.lottery.rewind = 'init'
  c.lottery.controls = ('random_prune',)
  c.lottery.replicates = 3
  c.train.eval_every = 100
  c.train.checkpoint_every = 1500
  return c
