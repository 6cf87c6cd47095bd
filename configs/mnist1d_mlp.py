"""MNIST-1D, the MLP 40-500-500-10 with a residual connection, dense.

Settings of the MNIST-1D lottery-ticket notebook (Greydanus & Kobak 2020,
"Scaling down deep learning with MNIST-1D"): Adam, learning rate 2e-2,
batch 100, 1501 steps. Their dense network reaches about 65% test accuracy.

  sparsejax train --config configs/mnist1d_mlp.py --workdir runs/mnist1d_mlp
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'mnist1d'
  c.data.batch_size = 100
  c.data.eval_batch_size = 1000
  c.model.name = 'mnist1d_mlp'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 2e-2
  c.train.steps = 1500
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c
