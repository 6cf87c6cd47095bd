"""Lottery tickets for LeNet-300-100 on MNIST at the paper's budget
(Frankle & Carbin 2019, section 2 and figure 3/4): 50,000 iterations per
level, evaluation every 100 iterations on the 5k validation and 10k test
images, Adam 1.2e-3, batch 60, 20% of the remaining weights pruned per level
(10% of the output layer's), rewind to the initial weights, random
re-initialisation with the ticket's mask as the control. 15 levels (to 3.6%
of the weights). One seed per command; the README records seed 0
(`sparsejax reproduce lottery_lenet_mnist`).

  sparsejax lottery --config experiments/lottery_lenet_mnist/config_50k.py:0 --workdir runs/lt50k
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'


def get_config(seed='0'):
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.seed = int(seed)
  c.train.steps = 50_000
  c.train.eval_every = 100
  c.train.log_every = 1000
  c.train.checkpoint_every = 10_000
  c.pruning.scales = {'output': 0.5}
  c.lottery.levels = 15
  c.lottery.prune_fraction = 0.2
  c.lottery.rewind = 'init'
  c.lottery.controls = ('reinit',)
  c.lottery.replicates = 1
  return c
