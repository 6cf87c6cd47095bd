"""Perplexity of a causal language model in the post-training pruning
papers' protocol, and the `sparsejax perplexity` command.

The protocol is GPTQ's evaluation (Frantar et al. 2023), reused unchanged by
SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2024): tokenize
the whole evaluation text once, cut the ids into non-overlapping windows of
`seqlen` tokens (the remainder is dropped), run each window on its own from
position 0, and report exp of the mean negative log-likelihood of every
next-token prediction: seqlen - 1 per window (the first token of a window is
never predicted). GPTQ writes it as exp(sum of window-mean NLL * seqlen /
(windows * seqlen)); every window has the same count, so that is the same
number. The papers use seqlen = the model's context (2048 or 4096); a CPU
budget calls for less, and the number depends on it: always report seqlen.

`perplexity(apply_fn, params, ids, seqlen)` is a pure function of its
inputs: one jitted program per window-batch shape (at most two: the batch
and the remainder), compiled ahead of time so the compile time is reported
apart from the tokens/s. It returns the per-token NLLs (windows, seqlen - 1)
too, for bootstrap intervals over tokens or windows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data.corpus import cut_windows, window_index  # noqa: F401  (window_index: the spread)
from sparsejax.train.task import SetupError


@dataclasses.dataclass(frozen=True)
class Perplexity:
  perplexity: float
  mean_nll: float                # natural log, per predicted token
  nll: np.ndarray                # float32 (windows, seqlen - 1)
  window_index: np.ndarray       # which windows of the text were run
  total_windows: int             # windows the text makes
  seqlen: int
  batch: int
  text_tokens: int               # ids given (the remainder included)
  seconds: float                 # running the windows, compiles excluded
  compile_seconds: float

  @property
  def windows(self) -> int:
    return int(self.nll.shape[0])

  @property
  def predicted_tokens(self) -> int:
    return int(self.nll.size)

  @property
  def tokens_per_second(self) -> float:
    """Tokens run (windows * seqlen) per second of running."""
    return self.windows * self.seqlen / self.seconds if self.seconds > 0 else math.inf

  def summary(self) -> dict:
    """The JSON-able numbers (no per-token arrays)."""
    return {'perplexity': self.perplexity, 'mean_nll': self.mean_nll,
            'windows': self.windows, 'total_windows': self.total_windows,
            'seqlen': self.seqlen, 'batch': self.batch,
            'predicted_tokens': self.predicted_tokens, 'text_tokens': self.text_tokens,
            'seconds': self.seconds, 'compile_seconds': self.compile_seconds,
            'tokens_per_second': self.tokens_per_second}


def token_windows(ids, seqlen: int, max_windows: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int]:
  """(windows int32 (n, seqlen), their indices, total windows): ids cut into
  non-overlapping windows, the remainder dropped."""
  if int(seqlen) != seqlen or seqlen < 2:
    raise SetupError(f'seqlen must be an integer of at least 2 (one prediction needs two '
                     f'tokens), got {seqlen!r}')
  if len(ids) < seqlen:
    raise SetupError(f'the text has {len(ids)} tokens, fewer than one window of seqlen='
                     f'{seqlen}: give a longer text or a smaller --seqlen')
  return cut_windows(ids, int(seqlen), max_windows)


def nll_program(apply_fn: Callable[[Any, jax.Array], jax.Array]) -> Callable:
  """(params, windows (B, T)) -> float32 NLL (B, T - 1) of tokens 1..T-1
  given the ones before, from apply_fn's logits (B, T, V)."""
  def nll(params, windows):
    logits = apply_fn(params, windows)[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, windows[:, 1:, None], axis=-1)[..., 0]
  return jax.jit(nll)


def perplexity(apply_fn: Callable[[Any, jax.Array], jax.Array], params, ids, seqlen: int,
               batch: int = 1, max_windows: int | None = None,
               progress: bool = False) -> Perplexity:
  """Perplexity of `apply_fn(params, tokens (B, T)) -> logits (B, T, V)` over
  the token ids `ids` (the whole tokenized text) in the protocol above,
  `batch` windows a run; `progress` shows a tqdm bar."""
  if int(batch) != batch or batch < 1:
    raise SetupError(f'batch must be a positive integer, got {batch!r}')
  windows, index, total = token_windows(ids, seqlen, max_windows)
  program = nll_program(apply_fn)
  compiled, compile_seconds = {}, 0.0
  out, seconds = [], 0.0
  starts = range(0, len(windows), batch)
  if progress:
    from tqdm import tqdm
    starts = tqdm(starts, desc=f'perplexity ({len(windows)} windows of {seqlen})',
                  unit='batch', disable=None, dynamic_ncols=True)
  for start in starts:
    chunk = jnp.asarray(windows[start:start + batch])
    if chunk.shape not in compiled:
      t0 = time.perf_counter()
      compiled[chunk.shape] = program.lower(params, chunk).compile()
      compile_seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    out.append(np.asarray(compiled[chunk.shape](params, chunk)))
    seconds += time.perf_counter() - t0
  nll = np.concatenate(out).astype(np.float32)
  mean = float(np.mean(nll, dtype=np.float64))
  return Perplexity(perplexity=math.exp(mean), mean_nll=mean, nll=nll, window_index=index,
                    total_windows=total, seqlen=int(seqlen), batch=int(batch),
                    text_tokens=len(ids), seconds=seconds, compile_seconds=compile_seconds)


# ---------------------------------------------------------------- the command

def read_text(text_file=None, corpus_part: str | None = None) -> tuple[str, str]:
  """(text, what it is) from a UTF-8 file or a part of the built-in corpus
  (sparsejax.data.corpus: 'eval' by default)."""
  if text_file is not None:
    path = pathlib.Path(text_file).expanduser()
    if not path.is_file():
      raise SetupError(f'no text file at {path}')
    try:
      return path.read_text(encoding='utf-8'), str(path)
    except UnicodeDecodeError as e:
      raise SetupError(f'{path} is not UTF-8 text: {e}') from None
  from sparsejax.data import corpus
  part = corpus_part or 'eval'
  return corpus.corpus_text(part), f'corpus:{part} ({corpus.KJV_DIST})'


def load_model(model: str, weights=None):
  """`sparsejax.models.pretrained.load_lm`, its errors as one-line SetupErrors.
  `weights` may also be a sparsejax run or `sparsejax prune` workdir (or a
  checkpoint, .npz, .safetensors keyed by leaf path) of `model`'s
  architecture: its params with `model`'s tokenizer."""
  from sparsejax.io import assets
  from sparsejax.models import llama_weights, pretrained
  from sparsejax.train import checkpoint as ckpt_lib, weights as weights_lib
  try:
    if weights is None or assets.is_model_spec(weights):
      return pretrained.load_lm(model, weights)
    tokenizer, eos, config = pretrained.load_tokenizer(model)
    params, _ = weights_lib.load_weights(weights, llama_weights.abstract_params(config))
    return pretrained.PretrainedLM(config.module(), jax.tree.map(jnp.asarray, params), config,
                                   tokenizer, eos, str(weights))
  except (OSError, ImportError, ValueError, ckpt_lib.CheckpointError) as e:
    raise SetupError(str(e)) from None


def run(model: str, *, weights=None, text_file=None, corpus_part=None, seqlen: int = 256,
        max_windows: int | None = None, batch: int = 1, out=None, nll_out=None,
        progress: bool = True) -> dict:
  """`sparsejax perplexity`: load, tokenize, evaluate, append a JSON line
  to `out` and write the per-token NLLs to `nll_out` (.npz: `nll` float32
  (windows, seqlen - 1), `windows` their token ids (windows, seqlen),
  `window_index`, `summary` as JSON); returns the line's dict. Input is
  checked before the model loads. The text is encoded with the special
  tokens its tokenizer adds (GPTQ's eval does the same: a BOS at the start
  for Llama's tokenizer.json; none for SmolLM2's GGUF tokenizer)."""
  if int(seqlen) != seqlen or seqlen < 2:
    raise SetupError(f'--seqlen must be at least 2 (one prediction needs two tokens), '
                     f'got {seqlen}')
  if max_windows is not None and max_windows < 1:
    raise SetupError(f'--max-windows must be at least 1, got {max_windows}')
  if batch < 1:
    raise SetupError(f'--batch must be at least 1, got {batch}')
  text, what = read_text(text_file, corpus_part)
  t0 = time.perf_counter()
  lm = load_model(model, weights)
  load_seconds = time.perf_counter() - t0
  ids = lm.tokenizer.encode(text).ids
  apply_fn = lambda p, x: lm.module.apply({'params': p}, x)
  res = perplexity(apply_fn, lm.params, ids, seqlen, batch=batch, max_windows=max_windows,
                   progress=progress)
  row = {'model': model, 'weights': None if weights is None else str(weights),
         'source': lm.source, 'text': what, 'text_chars': len(text),
         **res.summary(), 'load_seconds': load_seconds,
         'platform': jax.devices()[0].platform}
  if nll_out is not None:
    windows, _, _ = token_windows(ids, seqlen, max_windows)
    pathlib.Path(nll_out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(nll_out, nll=res.nll, windows=windows, window_index=res.window_index,
                        summary=np.asarray(json.dumps(row)))
  if out is not None:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('a') as f:
      f.write(json.dumps(row) + '\n')
  return row


# -- the command (registered in `cli_args.PROGRAMS`) ---------------------------
HELP = "perplexity of a pretrained LM in the pruning papers' protocol (non-overlapping windows)"
USAGE = """\
  sparsejax perplexity --model smollm2|FILE.gguf|HF_DIR [--weights DIR]
                    [--text FILE | --corpus eval|calibration] [--seqlen 256]
                    [--max-windows N] [--batch B] [--out FILE.jsonl] [--save-nll F.npz]
"""


def add_model_arguments(parser) -> None:
  """--model and --weights, which `perplexity` and `generate` share."""
  parser.add_argument('--model', required=True, help='smollm2, a .gguf file or a Hugging Face '
                      'folder (config.json + model.safetensors + tokenizer.json)')
  parser.add_argument('--weights', default=None, help="weights of --model's architecture to run "
                      'instead: a sparsejax run or prune workdir, or a folder written by save_hf '
                      "(with --model's tokenizer if it has none)")


def add_arguments(parser) -> None:
  add_model_arguments(parser)
  source = parser.add_mutually_exclusive_group()
  source.add_argument('--text', default=None, help='a UTF-8 text file')
  source.add_argument('--corpus', default=None, choices=('eval', 'calibration'),
                      help='a part of the built-in King James Bible corpus (default: eval)')
  parser.add_argument('--seqlen', type=int, default=256, help='window length in tokens (256)')
  parser.add_argument('--max-windows', type=int, default=None,
                      help='run N windows spread evenly over the text (default: all)')
  parser.add_argument('--batch', type=int, default=1, help='windows per run (1)')
  parser.add_argument('--out', default=None, help='append the result as a JSON line')
  parser.add_argument('--save-nll', default=None,
                      help='write per-token NLLs and windows (.npz)')


def main(args) -> None:
  """`sparsejax perplexity`: prints the summary line of `run`'s row."""
  from sparsejax.programs import summaries
  print(summaries.perplexity(run(
      args.model, weights=args.weights, text_file=args.text, corpus_part=args.corpus,
      seqlen=args.seqlen, max_windows=args.max_windows, batch=args.batch, out=args.out,
      nll_out=args.save_nll)))
