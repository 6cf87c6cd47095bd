"""ResNet-20 on CIFAR-10 (tensorflow-datasets) with RigL at 90% sparsity.

He et al. 2016's CIFAR recipe: SGD with Nesterov momentum 0.9, learning rate
0.1 with cosine decay, weight decay 1e-4, batch 128; RigL (Evci et al.
2020) with ERK allocation, the first convolution and the output layer kept
dense. Needs the prepared 'cifar10' tfds dataset; meant for a GPU or TPU.

  sparsejax train --config configs/resnet20_cifar10_rigl.py --workdir runs/resnet20
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'tfds'
  c.data.options = {'tfds_name': 'cifar10'}
  c.data.batch_size = 128
  c.data.eval_batch_size = 500
  c.model.name = 'resnet20'
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.1
  c.optimizer.options = {'momentum': 0.9, 'nesterov': True}
  c.optimizer.chain = (('add_decayed_weights', {'weight_decay': 1e-4}),)   # L2, as in SGD recipes
  c.optimizer.schedule = 'cosine'
  c.sparsity = 0.9
  c.pruning.schedule = 'rigl'
  c.pruning.allocation = 'erk'
  c.pruning.exclude = '^conv_0/|^output/'
  c.pruning.every = 100
  c.pruning.end = 48000
  c.train.steps = 64000
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  return c
