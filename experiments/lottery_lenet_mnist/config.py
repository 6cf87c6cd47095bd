"""Lottery tickets for LeNet-300-100 on MNIST (Frankle & Carbin 2019, section 2).

Adam lr 1.2e-3, batch 60, 55k/5k/10k split, 20% of the remaining weights
pruned per level and 10% of the output layer's, weights reset to their
initial values, early stopping by validation loss. Their result: winning
tickets learn faster and are more accurate than the dense network down to
about 7% of the weights (about +0.3 points at 13.5%) and return to the dense
level at about 3.6%; randomly re-initialised tickets fall below the dense
network from about 21% and are about 0.5 points worse there.

Budget cut for this 2-core CPU: 10,000 iterations per level instead of
50,000 (about 11 epochs; evaluation every 250 iterations on the 5k
validation and 10k test images), 18 levels (to 1.9%), 3 seeds.

  sparsejax lottery --config experiments/lottery_lenet_mnist/config.py --workdir runs/exp
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.train.steps = 10000
  c.train.eval_every = 250
  c.train.log_every = 250
  c.train.checkpoint_every = 10000
  c.pruning.scales = {'output': 0.5}
  c.lottery.levels = 18
  c.lottery.prune_fraction = 0.2
  c.lottery.rewind = 'init'
  c.lottery.controls = ('reinit',)
  c.lottery.replicates = 3
  return c
