"""LeNet-300-100 on MNIST with gradual magnitude pruning to 90% sparsity,
the output layer pruned at half the rate (Frankle & Carbin's convention).

  sparsejax train --config configs/lenet300_100_mnist_gradual.py --workdir runs/lenet_gmp
"""

import pathlib

from sparsejax.config import load_config


def get_config():
  c = load_config(pathlib.Path(__file__).with_name('lenet300_100_mnist.py'))
  c.sparsity = 0.9
  c.pruning.schedule = 'gradual'
  c.pruning.start = 500
  c.pruning.end = 3500
  c.pruning.every = 100
  c.pruning.scales = {'output': 0.5}
  return c
