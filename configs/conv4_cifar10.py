"""Conv-4 on CIFAR-10 through tensorflow-datasets (Frankle & Carbin 2019).

Adam, learning rate 3e-4, batch 60; they train 25k iterations. Needs the
prepared 'cifar10' dataset in tfds's data_dir (`tfds build cifar10` on a
machine with network, then copy ~/tensorflow_datasets). 2D convolutions are
slow on CPU: run this on a GPU or TPU.

  sparsejax train --config configs/conv4_cifar10.py --workdir runs/conv4
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'tfds'
  c.data.options = {'tfds_name': 'cifar10'}
  c.data.batch_size = 60
  c.data.eval_batch_size = 500
  c.model.name = 'conv4'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-4
  c.train.steps = 25000
  c.train.log_every = 100
  c.train.eval_every = 2500
  c.train.checkpoint_every = 2500
  return c
