"""`sparsejax reproduce`: an experiment folder's sweep, report and claims."""

import csv

from sparsejax import reproduce

SWEEP = '''
from sparsejax.config import default_config

def get_config():
  c = default_config()
  c.model.options = {'hidden': 16}
  c.train.steps = 20
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  return c

def get_sweep():
  yield {'seed': 0, '_arm': 'dense'}
  yield {'seed': 0, 'sparsity': 0.5, 'pruning.schedule': 'oneshot', '_arm': 'oneshot'}
'''

CLAIMS = '''
from sparsejax.reproduce import Claim
SWEEP = 'sweep.py'

def claims(rows):
  acc = {r['arm']: r['final']['test_accuracy'] for r in rows}
  return [Claim('dense above chance', '> 0.1', f"{acc['dense']:.3f}", 'ordering',
                acc['dense'] > 0.1),
          Claim('oneshot at 50% error', '0.0', f"{1 - acc['oneshot']:.3f}", '± 0.01',
                abs(1 - acc['oneshot']) <= 0.01)]
'''


def test_reproduce_runs_reports_and_judges(tmp_path):
  folder = tmp_path / 'toy_experiment'
  folder.mkdir()
  (folder / 'sweep.py').write_text(SWEEP)
  (folder / 'reproduce.py').write_text(CLAIMS)
  out = []
  claims = reproduce.reproduce(str(folder), tmp_path / 'run', log=out.append)
  assert [c.verdict for c in claims] == ['pass', 'miss']      # the second target is absurd
  rows = list(csv.DictReader(open(tmp_path / 'run' / 'claims.csv')))
  assert [r['verdict'] for r in rows] == ['pass', 'miss']
  assert (tmp_path / 'run' / 'report.csv').exists()
  assert '| oneshot at 50% error | 0.0 |' in out[-1]
  again = reproduce.reproduce(str(folder), tmp_path / 'run', collect=True, log=out.append)
  assert [c.ours for c in again] == [c.ours for c in claims]


LOTTERY = '''
from sparsejax.config import default_config

def get_config(seed='0'):
  c = default_config()
  c.seed = int(seed)
  c.model.options = {'hidden': 16}
  c.train.steps = 20
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.lottery.levels = 1
  c.lottery.prune_fraction = 0.5
  return c
'''

LOTTERY_CLAIMS = '''
from sparsejax.reproduce import Claim
LOTTERY = ['config.py:0', 'config.py:1']

def claims(rows):
  seeds = sorted({r['seed'] for r in rows if r['level'] == 1})
  return [Claim('both seeds reach level 1', '[0, 1]', str(seeds), 'exact', seeds == [0, 1])]
'''


def test_reproduce_lottery_experiment(tmp_path):
  """A folder whose reproduce.py names LOTTERY configs (one lottery per seed)."""
  folder = tmp_path / 'toy_lottery'
  folder.mkdir()
  (folder / 'config.py').write_text(LOTTERY)
  (folder / 'reproduce.py').write_text(LOTTERY_CLAIMS)
  out = []
  claims = reproduce.reproduce(str(folder), tmp_path / 'run', log=out.append)
  assert [c.verdict for c in claims] == ['pass']
  again = reproduce.reproduce(str(folder), tmp_path / 'run', collect=True, log=out.append)
  assert [c.ours for c in again] == ['[0, 1]']
  runs = list(csv.DictReader(open(tmp_path / 'run' / 'results.csv')))
  assert sorted((r['seed'], r['level']) for r in runs) == [('0', '0'), ('0', '1'), ('1', '0'), ('1', '1')]
  assert all(float(r['final.test_accuracy']) > 0 for r in runs)
