"""A small Transformer encoder classifying MNIST-1D sequences, 2:4 sparse.

Each of the 40 positions is one scalar token, projected to d_model. Every
attention and MLP matrix is pruned one-shot by magnitude to the 2:4 pattern
at step 200 and then fine-tuned with the mask fixed.

  sparsejax train --config configs/transformer_mnist1d.py --workdir runs/tf_mnist1d
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'mnist1d'
  c.data.batch_size = 100
  c.model.name = 'transformer_encoder'
  c.model.options = {'d_model': 64, 'num_heads': 4, 'num_layers': 2, 'mlp_dim': 128}
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.options = {'weight_decay': 1e-4}
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = 'cosine'
  c.pruning.schedule = 'oneshot'
  c.pruning.at_step = 200
  c.pruning.pattern = 'nm'
  c.pruning.pattern_options = {'n': 2, 'm': 4}
  c.pruning.include = 'block_.*/(attention|mlp)/.*kernel'
  c.train.steps = 2000
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c
