"""Why OWL misses on SmolLM2 (claim 4): its M and lambda, one seed.

Exploratory, not a pre-registered claim: claim 4 (claims.md) is judged on
OWL's reference setting (M = 5, lambda = 0.08) only. On calibration seed 0
it misses: Wanda+OWL 352.88 against uniform Wanda 293.78 at 70%. The outlier
ratios OWL measured (prune.json of wanda_owl_70_s0) rise with depth, from
0.49% (block 1) to 2.70% (block 29), with block 0 at 1.45%, so OWL prunes
the early blocks hardest (up to 75.5%) and the last ones least (59.5%).
If the early blocks of a 135M model matter more than their outlier share
says, a narrower range (smaller lambda) should lose less, and the outlier
multiple M changes which scores count as outliers. Arms, each against
uniform Wanda 70% on the same calibration windows (seed 0):

  M = 5,  lambda in {0.02, 0.04}   (and 0.08: the claim's arm, run.py)
  M in {3, 10}, lambda = 0.08

  nice -n 10 .venv/bin/python experiments/smollm2_prune/owl_ablation.py
  .venv/bin/python experiments/smollm2_prune/owl_ablation.py --collect --record

Needs run.py's wanda_70_s0 and wanda_owl_70_s0 under --workdir; runs are
skipped when done. --record writes results/owl_ablation.csv: perplexity,
the block sparsity range, and the paired bootstrap interval of the mean NLL
difference against uniform Wanda over the 8,160 evaluation tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))   # experiments/pipeline_tools.py
sys.path.insert(0, str(HERE))

from pipeline_tools import run, sparsejax_bin, write_csv  # noqa: E402
from run import CONFIG, SEQLEN, WINDOWS, bootstrap_ci  # noqa: E402

SEED = 0
ARMS = ((5.0, 0.02), (5.0, 0.04), (3.0, 0.08), (10.0, 0.08))
REFERENCE = (5.0, 0.08)   # run.py's wanda_owl_70_s0
UNIFORM = f'wanda_70_s{SEED}'


def arm_name(m: float, lam: float) -> str:
  if (m, lam) == REFERENCE:
    return f'wanda_owl_70_s{SEED}'
  return f'wanda_owl_m{m:g}_l{lam:g}_70_s{SEED}'


def pipeline(root: pathlib.Path) -> None:
  sj = sparsejax_bin()
  for m, lam in ARMS:
    out = root / arm_name(m, lam)
    if not (out / 'prune.json').exists():
      run([sj, 'prune', '--config', CONFIG, '--workdir', str(out), '--no-eval',
           '--method', 'wanda', '--sparsity', '0.7', '--owl', '--owl-m', str(m),
           '--owl-lambda', str(lam), '--calibration', '32', f'--config.seed={SEED}'],
          root / f'{out.name}.log')
    if not (out / 'nll.npz').exists():
      run([sj, 'perplexity', '--model', 'smollm2', '--weights', str(out), '--corpus', 'eval',
           '--seqlen', str(SEQLEN), '--max-windows', str(WINDOWS), '--out',
           str(out / 'perplexity.jsonl'), '--save-nll', str(out / 'nll.npz')],
          root / f'{out.name}.ppl.log')


def collect(root: pathlib.Path) -> list[dict]:
  with np.load(root / UNIFORM / 'nll.npz') as f:
    uniform = f['nll'].astype(np.float64)
  rows = []
  for m, lam in sorted(set(ARMS) | {REFERENCE}):
    out = root / arm_name(m, lam)
    if not (out / 'nll.npz').exists():
      continue
    with np.load(out / 'nll.npz') as f:
      nll = f['nll'].astype(np.float64)
    owl = json.loads((out / 'prune.json').read_text())['report']['owl']
    spars = [v for v in owl['sparsities'].values() if v is not None]
    diff = nll - uniform
    lo, hi = bootstrap_ci(diff, np.random.default_rng(0), axis_windows=False)
    rows.append({'m': m, 'lambda': lam, 'calibration_seed': SEED,
                 'perplexity': round(math.exp(nll.mean()), 3),
                 'uniform_wanda_perplexity': round(math.exp(uniform.mean()), 3),
                 'nll_diff_vs_uniform': round(float(diff.mean()), 4),
                 'nll_diff_ci95_lo': round(lo, 4), 'nll_diff_ci95_hi': round(hi, 4),
                 'block_sparsity_min': round(min(spars), 4),
                 'block_sparsity_max': round(max(spars), 4),
                 'outlier_ratio_min_pct': round(100 * min(owl['outlier_ratios'].values()), 3),
                 'outlier_ratio_max_pct': round(100 * max(owl['outlier_ratios'].values()), 3)})
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/smollm2_prune')
  parser.add_argument('--collect', action='store_true', help='only summarize what exists')
  parser.add_argument('--record', action='store_true', help='write results/owl_ablation.csv')
  args = parser.parse_args(argv)
  root = pathlib.Path(args.workdir)
  if not args.collect:
    pipeline(root)
  rows = collect(root)
  for r in rows:
    print(f"M={r['m']:g} lambda={r['lambda']:g}: ppl {r['perplexity']:.3f} vs uniform "
          f"{r['uniform_wanda_perplexity']:.3f}; NLL diff {r['nll_diff_vs_uniform']:+.4f} "
          f"(95% CI {r['nll_diff_ci95_lo']:+.4f} to {r['nll_diff_ci95_hi']:+.4f}); blocks "
          f"{r['block_sparsity_min']:.3f}..{r['block_sparsity_max']:.3f}")
  if args.record:
    write_csv(HERE / 'results' / 'owl_ablation.csv', rows)


if __name__ == '__main__':
  main()
