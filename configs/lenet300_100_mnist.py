"""LeNet-300-100 on MNIST, dense (Frankle & Carbin 2019, section 2).

Adam, learning rate 1.2e-3, batch 60, the 55k/5k/10k split (5k validation
for early stopping). They train 50k iterations; 5000 steps (about 5.5
epochs) are enough here for about 98% test accuracy.

  sparsejax train --config configs/lenet300_100_mnist.py --workdir runs/lenet
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'mnist'
  c.data.options = {'split': '55k/5k/10k'}
  c.data.batch_size = 60
  c.data.eval_batch_size = 1000
  c.model.name = 'lenet300_100'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1.2e-3
  c.train.steps = 5000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.eval_splits = ('validation', 'test')
  return c
