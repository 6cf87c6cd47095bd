"""Text generation from a Llama-family model with its KV cache, and the
`sparsejax generate` command.

`generate(model, params, prompt, steps, temperature, seed)` runs the prompt
once, then one cached step per new token (`sparsejax.models.llama`'s
`init_cache` / `apply(..., cache=)`), all inside one jitted program: at
temperature 0 the argmax (greedy decoding), else a draw from
softmax(logits / temperature) with the key of step j = fold_in(key(seed), j),
so a seed fixes the output. Generation runs for `steps` tokens; the command
cuts the text at the first end-of-sequence token.
"""

from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.models.llama import Llama, init_cache
from sparsejax.train.task import SetupError


@functools.partial(jax.jit, static_argnames=('model', 'steps', 'temperature'))
def generate(model: Llama, params, prompt: jax.Array, steps: int,
             temperature: float = 0.0, seed: int | jax.Array = 0) -> jax.Array:
  """The `steps` tokens (B, steps) that follow `prompt` (B, T) int32."""
  b, t = prompt.shape
  cache = init_cache(model, b, t + steps)
  logits, cache = model.apply({'params': params}, prompt, cache=cache)
  key = jax.random.key(seed)

  def pick(last, j):
    if temperature == 0:
      return jnp.argmax(last, axis=-1).astype(prompt.dtype)
    draw = jax.random.categorical(jax.random.fold_in(key, j), last / temperature, axis=-1)
    return draw.astype(prompt.dtype)

  def step(carry, j):
    last, cache = carry
    token = pick(last, j)
    logits, cache = model.apply({'params': params}, token[:, None], cache=cache)
    return (logits[:, -1], cache), token

  _, tokens = jax.lax.scan(step, (logits[:, -1], cache), jnp.arange(steps))
  return tokens.T


def cut_at_eos(tokens, eos_ids) -> list[int]:
  """The tokens before the first end-of-sequence id (all if none)."""
  tokens = [int(t) for t in tokens]
  for i, token in enumerate(tokens):
    if token in eos_ids:
      return tokens[:i]
  return tokens


def run(model: str, prompt: str, *, weights=None, max_new_tokens: int = 64,
        temperature: float = 0.0, seed: int = 0) -> dict:
  """`sparsejax generate`: {'text': prompt + continuation, 'completion',
  'prompt_tokens', 'new_tokens', 'seconds', 'tokens_per_second', ...}.
  Input is checked before the model loads."""
  from sparsejax.programs.perplexity import load_model
  if max_new_tokens < 1:
    raise SetupError(f'--max-new-tokens must be at least 1, got {max_new_tokens}')
  if not temperature >= 0:
    raise SetupError(f'--temperature must be >= 0 (0: greedy), got {temperature}')
  if not prompt:
    raise SetupError('--prompt is empty: give the text to continue')
  lm = load_model(model, weights)
  ids = lm.tokenizer.encode(prompt).ids
  if not ids:
    raise SetupError(f'the prompt {prompt!r} makes no tokens')
  if len(ids) + max_new_tokens > lm.config.max_len:
    raise SetupError(f'{len(ids)} prompt tokens + {max_new_tokens} new ones exceed the '
                     f"model's context of {lm.config.max_len}")
  tokens = jnp.asarray([ids], jnp.int32)
  t0 = time.perf_counter()
  compiled = generate.lower(lm.module, lm.params, tokens, max_new_tokens, float(temperature),
                            seed).compile()
  compile_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  new = np.asarray(compiled(lm.params, tokens, seed))[0]
  seconds = time.perf_counter() - t0
  kept = cut_at_eos(new, lm.eos_ids)
  completion = lm.tokenizer.decode(kept, skip_special_tokens=False)
  return {'text': prompt + completion, 'completion': completion, 'tokens': kept,
          'prompt_tokens': len(ids), 'new_tokens': len(kept),
          'stopped_at_eos': len(kept) < len(new), 'temperature': float(temperature),
          'seed': int(seed), 'seconds': seconds, 'compile_seconds': compile_seconds,
          'tokens_per_second': max_new_tokens / seconds if seconds > 0 else float('inf')}


# -- the command (registered in `cli_args.PROGRAMS`) ---------------------------
HELP = 'continue a prompt with a pretrained LM (KV cache)'
USAGE = """\
  sparsejax generate --model ... [--weights DIR] --prompt TEXT
                    [--max-new-tokens N] [--temperature T] [--seed S]
"""


def add_arguments(parser) -> None:
  from sparsejax.programs.perplexity import add_model_arguments
  add_model_arguments(parser)
  parser.add_argument('--prompt', required=True)
  parser.add_argument('--max-new-tokens', type=int, default=64)
  parser.add_argument('--temperature', type=float, default=0.0, help='0: greedy')
  parser.add_argument('--seed', type=int, default=0)


def main(args) -> None:
  """`sparsejax generate`: the text on stdout, the speed on stderr."""
  from sparsejax.programs import summaries
  row = run(args.model, args.prompt, weights=args.weights, seed=args.seed,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature)
  print(row['text'])
  print(summaries.generate_speed(row), file=sys.stderr)
