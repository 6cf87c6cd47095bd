"""Our MNIST-1D lottery setting (config.py) with one notebook difference
switched on: each layer's bias pruned with its weights in one magnitude
ranking (`bias='kernel_row'`), and the random control drawing over weights
and bias alike (Greydanus & Kobak 2020's notebook masks weights and biases
together; NOTEBOOK_DIFFERENCES.md, #8 and #14).

  sparsejax lottery --config experiments/lottery_mnist1d/config_kernel_row.py --workdir runs/nb
"""

import pathlib

from sparsejax.config import load_config

HERE = pathlib.Path(__file__).resolve().parent


def get_config():
  c = load_config(HERE / 'config.py')
  c.model.options = {'bias': 'kernel_row'}
  return c
