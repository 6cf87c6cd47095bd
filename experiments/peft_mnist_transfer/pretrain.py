"""Pretraining for the vision transfer task: LeNet-300-100 on MNIST digits
0-4, 3 seeds (run first, into DIR/pretrain).

  sparsejax sweep --config experiments/peft_mnist_transfer/pretrain.py --workdir runs/transfer/pretrain
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.data.options = {'split': '55k/5k/10k', 'classes': (0, 1, 2, 3, 4)}
  c.train.steps = 5000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 5000
  return c


def get_sweep():
  for seed in (0, 1, 2):
    yield {'seed': seed, '_arm': 'pretrain', '_name': f'seed_{seed}'}
