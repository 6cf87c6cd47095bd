"""SNIP (Lee et al. 2019) in its own protocol: LeNet-300-100 on MNIST at 95%
and 98% sparsity, beside GraSP, SynFlow and a random mask with SNIP's
per-layer sparsities, 3 seeds, plus the dense network.

SNIP's protocol (section 5 and appendix): saliency |w * dL/dw| from one batch
of 100 at variance-scaling initialisation (the authors' code uses
TensorFlow's variance_scaling_initializer; our LeNet300100 draws Flax's
glorot_normal, see anchor.md), one global threshold; then SGD with momentum 0.9, batch
100, weight decay 5e-4, learning rate 0.1 decayed by 10x every 25k
iterations; 10% of the training set held out (54k / 6k / 10k). The paper
does not give the total; we train 100k iterations (four learning-rate
phases) and report the test error of the best-validation checkpoint.
SNIP's code also standardises the inputs (mean and std of the training
pool); the main grid uses [0, 1] inputs and a second group repeats dense and
SNIP with standardised inputs.
GraSP (Wang et al. 2020) and SynFlow (Tanaka et al. 2020, 100 rounds) use the
same global threshold; the random control keeps, in every layer, as many
weights as SNIP's mask of the same seed (`counts_from='snip'`).

  sparsejax reproduce snip_lenet_mnist --workdir runs/snip --jobs 2
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
STEPS = 100_000


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.data.options = {'split': '54k/6k/10k'}
  c.data.batch_size = 100
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.1
  c.optimizer.options = {'momentum': 0.9}
  c.optimizer.chain = (('add_decayed_weights', {'weight_decay': 5e-4}),)
  c.optimizer.schedule = 'step'
  c.optimizer.decay_every = 25_000
  c.train.steps = STEPS
  c.train.log_every = 1000
  c.train.eval_every = 5000
  c.train.checkpoint_every = 25_000
  c.train.eval_splits = ('validation', 'test')
  return c


def get_sweep():
  for seed in (0, 1, 2):
    yield {'seed': seed, '_arm': 'dense'}
    for sparsity in (0.95, 0.98):
      base = {'seed': seed, 'sparsity': sparsity, 'pruning.schedule': 'at_init',
              'pruning.allocation': 'global'}
      for criterion in ('snip', 'grasp', 'synflow'):
        yield {**base, 'pruning.criterion': criterion, '_arm': criterion}
      yield {**base, 'pruning.criterion': 'random', 'pruning.counts_from': 'snip',
             '_arm': 'random (SNIP counts)'}
  # SNIP's code standardises MNIST (one mean and std over the training pool);
  # the main grid uses [0, 1] inputs. The same SNIP points with its inputs:
  for seed in (0, 1, 2):
    std = {'seed': seed, 'data.options': {'split': '54k/6k/10k', 'standardize': True}}
    yield {**std, '_arm': 'dense, standardized inputs'}
    for sparsity in (0.95, 0.98):
      yield {**std, 'sparsity': sparsity, 'pruning.schedule': 'at_init',
             'pruning.allocation': 'global', 'pruning.criterion': 'snip',
             '_arm': 'snip, standardized inputs'}
