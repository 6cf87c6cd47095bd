"""Dense LeNet-300-100 on MNIST, 3 seeds: the trained models the recovery
table prunes (run this sweep first, into DIR/dense).

  sparsejax sweep --config experiments/recovery_lenet_mnist/dense.py --workdir runs/recovery/dense
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
SEEDS = (0, 1, 2)


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.train.steps = 10000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 10000
  return c


def get_sweep():
  for seed in SEEDS:
    yield {'seed': seed, '_arm': 'dense', '_name': f'seed_{seed}'}
