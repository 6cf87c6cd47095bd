"""Dense SmolLM2-135M-Instruct perplexity on the corpus' evaluation split
(sparsejax.data.corpus: the King James New Testament), ours against
transformers' on the same token windows; writes results/dense_perplexity.csv.

  .venv/bin/python experiments/smollm2_prune/dense_perplexity.py [--seqlen 256] [--windows 32]

Runs `sparsejax perplexity ... --save-nll` (the command is recorded in the
CSV; the persistent compilation cache off, so its compile time is a first
run's), then, if the reference environment exists (--refpython, default
/work/refvenv/bin/python), transformers_perplexity.py on the saved windows
with the evaluation text, and compares per-token NLLs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIELDS = ('implementation', 'model', 'text', 'seqlen', 'windows', 'total_windows',
          'predicted_tokens', 'perplexity', 'mean_nll', 'seconds', 'compile_seconds',
          'load_seconds', 'tokens_per_second', 'rel_diff_vs_sparsejax', 'max_abs_nll_diff',
          'tokens_match', 'command')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seqlen', type=int, default=256)
  parser.add_argument('--windows', type=int, default=32)
  parser.add_argument('--refpython', default='/work/refvenv/bin/python')
  args = parser.parse_args()
  results = HERE / 'results'
  results.mkdir(exist_ok=True)
  ours_npz = results / 'dense_nll_smollm2.npz'
  jsonl = results / 'dense_perplexity.jsonl'
  jsonl.unlink(missing_ok=True)
  cmd = ['sparsejax', 'perplexity', '--model', 'smollm2', '--corpus', 'eval',
         '--seqlen', str(args.seqlen), '--max-windows', str(args.windows),
         '--out', str(jsonl.relative_to(ROOT)), '--save-nll', str(ours_npz.relative_to(ROOT))]
  exe = pathlib.Path(sys.executable).parent / 'sparsejax'
  # a cold compile, timed as a first run would be (no persistent cache)
  env = {**os.environ, 'SPARSEJAX_CACHE_DIR': 'off'}
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  subprocess.run([str(exe)] + cmd[1:], cwd=ROOT, check=True, env=env)
  ours = json.loads(jsonl.read_text().splitlines()[-1])
  rows = [{'implementation': 'sparsejax (JAX, float32)', **ours, 'command': shlex.join(cmd)}]
  ref = pathlib.Path(args.refpython)
  if ref.exists():
    from sparsejax.data import corpus
    from sparsejax.models import llama_weights
    theirs_npz = results / 'transformers_nll_smollm2.npz'
    with tempfile.TemporaryDirectory() as tmp:
      text = pathlib.Path(tmp) / 'eval.txt'
      text.write_text(corpus.corpus_text('eval'), encoding='utf-8')
      ref_cmd = [str(ref), str(HERE.relative_to(ROOT) / 'transformers_perplexity.py'),
                 '--gguf', str(llama_weights.smollm2_gguf_path().relative_to(ROOT)),
                 '--windows', str(ours_npz.relative_to(ROOT)), '--text', str(text),
                 '--out', str(theirs_npz.relative_to(ROOT))]
      subprocess.run(ref_cmd, cwd=ROOT, check=True)
    theirs = json.loads(str(np.load(theirs_npz)['summary']))
    diff = np.abs(np.load(theirs_npz)['nll'] - np.load(ours_npz)['nll'])
    rel = ours['perplexity'] / theirs['perplexity'] - 1
    rows.append({'model': 'smollm2', 'text': ours['text'], 'total_windows': ours['total_windows'],
                 **theirs, 'implementation': f"transformers {theirs['versions']['transformers']} "
                 f"(torch {theirs['versions']['torch']}, float32)",
                 'compile_seconds': 0.0, 'rel_diff_vs_sparsejax': -rel,
                 'max_abs_nll_diff': float(diff.max()),
                 'command': shlex.join(ref_cmd[:1] + ref_cmd[1:]).replace(tmp, '$TMP')})
    print(f"ours {ours['perplexity']:.4f}, transformers {theirs['perplexity']:.4f} "
          f'({100 * rel:+.4f}%), max |NLL diff| {diff.max():.2e}, mean {diff.mean():.2e}')
  with (results / 'dense_perplexity.csv').open('w', newline='') as f:
    writer = csv.DictWriter(f, FIELDS, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in row.items()
                       if k in FIELDS})
  print((results / 'dense_perplexity.csv').read_text())


if __name__ == '__main__':
  main()
