"""Han et al. 2015 ("Learning both Weights and Connections for Efficient
Neural Networks", tables 1 and 2): LeNet-300-100 on MNIST pruned 12x with
their per-layer rates, 8% / 9% / 26% of the weights kept in fc1 / fc2 /
fc3, by magnitude within each layer, retrained with L2 regularisation,
pruning and retraining repeated (iterative). Their numbers: 1.64% error
dense, 1.59% after pruning and retraining.

Our setting (Han et al. trained in Caffe and give neither the solver nor
the number of rounds for LeNet): Caffe's LeNet solver (SGD, momentum 0.9,
L2 / weight decay 5e-4, batch 64, lr 0.01) on all 60k training images;
30,000 dense steps with the learning rate divided by 10 at step 20,000;
then 4 rounds of prune-and-retrain, each retraining 30,000 steps with the
weights kept (no rewind) at the final learning rate 1e-3 (Han et al.:
retrain with a smaller learning rate). Per round every layer loses the same
share of its remaining weights so that after round 4 exactly 8% / 9% / 26%
remain (fc1 keeps 0.532 of its remaining weights per round, fc2 0.548,
fc3 0.714). Test
error at the end of each round; 3 seeds.

  sparsejax lottery --config experiments/han_lenet_mnist/config.py --workdir runs/han
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
ROUNDS = 4
KEPT = {'hidden_0': 0.08, 'hidden_1': 0.09, 'output': 0.26}
PRUNE_FRACTION = 1 - KEPT['hidden_0'] ** (1 / ROUNDS)


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.data.options = {'split': '60k/10k'}
  c.data.batch_size = 64
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.01
  c.optimizer.options = {'momentum': 0.9}
  c.optimizer.chain = (('add_decayed_weights', {'weight_decay': 5e-4}),)
  c.optimizer.schedule = 'step'
  c.optimizer.milestones = (20_000,)
  c.optimizer.gamma = 0.1
  c.train.steps = 30_000
  c.train.log_every = 5000
  c.train.eval_every = 5000
  c.train.checkpoint_every = 10_000
  c.train.eval_splits = ('test',)
  # Scales act on each round's fraction of what remains (imp.prune_remaining).
  per_round = {k: 1 - v ** (1 / ROUNDS) for k, v in KEPT.items()}
  c.pruning.scales = {k: per_round[k] / PRUNE_FRACTION for k in ('hidden_1', 'output')}
  c.lottery.levels = ROUNDS
  c.lottery.prune_fraction = PRUNE_FRACTION
  c.lottery.rewind = 'none'
  c.lottery.controls = ()
  c.lottery.replicates = 3
  return c
