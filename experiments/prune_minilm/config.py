"""all-MiniLM-L6-v2 fully fine-tuned on stdlib-topics (the dense classifier),
then pruned after fine-tuning (magnitude, Wanda, SparseGPT; 50% unstructured
and 2:4) and, optionally, retrained briefly with the mask fixed.

  get_config()            dense full fine-tuning from the pretrained weights
                          (configs/minilm_stdlib_topics.py with finetune.method
                          'full' and experiments/peft_minilm's full-FT settings:
                          AdamW 5e-5, no weight decay, 20 warmup steps, cosine,
                          batch 16, 150 steps)         (sparsejax finetune)
  get_config('prune')     the same model, for `sparsejax prune --from DENSE_RUN`
  get_config('finetune')  retraining of a `sparsejax prune` workdir, mask fixed

See run.py for the whole pipeline and README.md for the results.
"""

import pathlib

import ml_collections

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'

DENSE_STEPS = 150
RETRAIN_STEPS = 40


def _pruning(schedule):
  # the 36 attention and MLP matrices of the 6 layers are what `sparsejax
  # prune` prunes (the Dense kernels inside layer_<i>); embeddings stay dense
  # and the classifier head `output` lies outside the layers
  return ml_collections.ConfigDict(dict(schedule=schedule, include=None,
                                        exclude='^embeddings/|^output/', min_ndim=2))


def get_config(arg=None):
  c = load_config(CONFIGS / 'minilm_stdlib_topics.py')
  c.finetune.method = 'full'
  c.optimizer.learning_rate = 5e-5
  c.train.steps = DENSE_STEPS
  c.train.eval_every = 50
  c.train.log_every = 10
  c.train.checkpoint_every = DENSE_STEPS
  c.sparsity = 0.0
  c.pruning = _pruning('dense')
  if arg in (None, 'dense', 'prune'):
    return c
  if arg != 'finetune':
    raise ValueError(f"get_config takes None, 'prune' or 'finetune'; got {arg!r}")
  c.finetune.method = 'masked'
  c.pruning = _pruning('fixed')
  c.optimizer.warmup_steps = 5
  c.train.steps = RETRAIN_STEPS
  c.train.eval_every = RETRAIN_STEPS
  c.train.checkpoint_every = RETRAIN_STEPS
  c.train.eval_at_start = True
  return c
