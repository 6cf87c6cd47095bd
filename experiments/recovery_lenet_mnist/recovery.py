"""The recovery table (ShrinkBench protocol, Blalock et al. 2020) for
LeNet-300-100 on MNIST: the dense models of dense.py pruned one-shot at
compression 2, 4, 8, 12, 16, 32 and 64 (sparsity 1 - 1/c), with global or
layer-wise (uniform) magnitude or random pruning, evaluated right after
pruning and after fine-tuning with the mask fixed (Adam 3e-4, cosine, 2000
steps, early stopping on the 5k validation images); and gradual magnitude
pruning over the same 2000 steps from the same dense model for comparison.
Anchor: Han et al. 2015, LeNet-300-100 at 12x compression with no loss
(1.64% -> 1.59% error) after retraining.

  sparsejax sweep --config experiments/recovery_lenet_mnist/recovery.py --workdir runs/recovery/finetune
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
PROGRAM = 'finetune'
SEEDS = (0, 1, 2)
COMPRESSIONS = (2, 4, 8, 12, 16, 32, 64)


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.optimizer.learning_rate = 3e-4
  c.optimizer.schedule = 'cosine'
  c.train.steps = 2000
  c.train.eval_every = 250
  c.train.log_every = 250
  c.train.checkpoint_every = 2000
  c.train.early_stopping = 4
  return c


def get_sweep():
  for seed in SEEDS:
    dense = f'{{workdir}}/../dense/seed_{seed}'
    for c in COMPRESSIONS:
      sparsity = round(1 - 1 / c, 6)
      for allocation in ('global', 'uniform'):
        for criterion in ('magnitude', 'random'):
          yield {'seed': seed, 'sparsity': sparsity, 'finetune.init_from': dense,
                 'pruning.schedule': 'oneshot', 'pruning.allocation': allocation,
                 'pruning.criterion': criterion,
                 '_arm': f'{"global" if allocation == "global" else "layer"}-{criterion}'}
      yield {'seed': seed, 'sparsity': sparsity, 'finetune.init_from': dense,
             'pruning.schedule': 'gradual', 'pruning.allocation': 'global',
             'pruning.start': 0, 'pruning.end': 1500, 'pruning.every': 100,
             'train.early_stopping': 0, '_arm': 'gradual-magnitude'}
