"""Every decimal number an experiment README quotes names its CSV cell in a
`from` comment (or is declared a paper number found in the folder's
anchor.md, or not a result): experiments/check_numbers.py over the recorded
folders and experiments/README.md, and the checker's own rules on small
folders; experiments/summary.csv is what experiments/summary.py computes from
the folders' CSVs, and experiments/README.md prints its table. Reads text
files only; no training."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / 'experiments'

_spec = importlib.util.spec_from_file_location('check_numbers', EXPERIMENTS / 'check_numbers.py')
check_numbers = importlib.util.module_from_spec(_spec)
sys.modules.setdefault('check_numbers', check_numbers)   # dataclasses look the module up
_spec.loader.exec_module(check_numbers)

# Folders whose READMEs may quote numbers in no CSV (none at present).
EXEMPT = ()

CHECKED = ('dst_lenet_mnist', 'dst_mnist1d', 'han_lenet_mnist', 'lm_prune_text',
           'gpt2_small_fsdp', 'lottery_lenet_mnist', 'pai_lenet_mnist', 'lottery_mnist1d',
           'peft_minilm',
           'peft_mnist_transfer', 'prune_minilm', 'recovery_lenet_mnist', 'rigl_lenet_mnist',
           'smollm2_prune', 'smollm2_sft', 'snip_lenet_mnist', 'sweep_resume_demo')

# Numbers declared `unsourced` (in no CSV at their printed precision, nor in
# the anchor), in README order: the checker prints a warning for each and
# exits 1. A new one is added here on purpose; one that gets a source leaves.
KNOWN_UNSOURCED: dict[str, list[str]] = {}


@pytest.mark.parametrize('name', ('.',) + CHECKED)
def test_readme_numbers_name_their_source(name):
  problems = check_numbers.check_folder(EXPERIMENTS / name)
  assert not problems, f'{name}: README numbers without a source:\n' + '\n'.join(map(str, problems))


@pytest.mark.parametrize('name', CHECKED)
def test_unsourced_numbers_are_the_known_ones(name):
  found = [p.number for p in check_numbers.report_folder(EXPERIMENTS / name).unsourced]
  assert found == KNOWN_UNSOURCED.get(name, [])


def test_every_folder_with_a_readme_is_checked_or_exempt():
  folders = {p.parent.name for p in EXPERIMENTS.glob('*/README.md')}
  assert folders <= set(CHECKED) | set(EXEMPT), sorted(folders - set(CHECKED) - set(EXEMPT))


# The checker's rules, on small folders.

RESULTS = ('arm,seed,sparsity,mean,std,density\n'
           'dense,0,,0.97512,0.0021,1.0\n'
           'static,0,0.9,0.96903,0.0021,0.1\n'
           'static,1,0.9,0.97103,0.0019,0.1\n')


def _folder(tmp_path, readme, anchor=None, results=RESULTS):
  (tmp_path / 'results.csv').write_text(results)
  (tmp_path / 'README.md').write_text(readme)
  if anchor is not None:
    (tmp_path / 'anchor.md').write_text(anchor)
  return tmp_path


def _why(tmp_path):
  return [(p.number, p.why) for p in check_numbers.check_folder(tmp_path)]


def test_a_number_with_no_from_entry_is_rejected(tmp_path):
  _folder(tmp_path, '| arm | ours |\n|---|---|\n| dense | 0.97512 |\n\n'
          'Dense 0.21 and +0.36 over the rest; `lr 0.123`; 7.5 min.\n\n'
          '<!-- from results.csv [arm=dense] mean: 0.97512; std pct: 0.21 -->\n'
          '<!-- check_numbers: not results: 1.2 (a setting) -->\nlr 1.2.\n')
  assert [n for n, _ in _why(tmp_path)] == ['+0.36']


def test_a_from_entry_whose_cell_differs_at_the_printed_decimals_is_rejected(tmp_path):
  # 0.97512 as a percentage is 97.51 at two decimals, not 97.52; at one
  # decimal 97.5 is right.
  _folder(tmp_path, 'Dense: 97.52 (97.5).\n\n'
          '<!-- from results.csv [arm=dense] mean pct: 97.52 97.5 -->\n')
  why = _why(tmp_path)
  assert [n for n, _ in why] == ['97.52']
  assert 'not 97.52 at 2 decimal(s)' in why[0][1]


def test_no_transform_is_tried_unless_written(tmp_path):
  _folder(tmp_path, 'Dense: 97.51.\n\n<!-- from results.csv [arm=dense] mean: 97.51 -->\n')
  assert [n for n, _ in _why(tmp_path)] == ['97.51']


@pytest.mark.parametrize('selector, why', [
    ('[arm=sparse]', 'no row matches'),
    ('[arm=static]', '2 rows match'),
    ('[arm=static, colour=red]', "no column 'colour'"),
])
def test_a_selector_must_pick_one_row_without_a_reducer(tmp_path, selector, why):
  _folder(tmp_path, f'Static: 97.00.\n\n<!-- from results.csv {selector} mean pct: 97.00 -->\n')
  found = _why(tmp_path)
  assert len(found) == 1 and why in found[0][1], found


def test_a_reducer_over_the_selected_rows(tmp_path):
  # mean of 0.96903 and 0.97103 is 0.97003: 97.00 %, error 3.00 %; the
  # sample std of the two accuracies is 0.00141: 0.14 points.
  _folder(tmp_path, 'Static: 97.00 ± 0.14, error 3.00; sparsity at least 90.0.\n\n'
          '<!-- from results.csv [arm=static] mean(mean) pct: 97.00; std(mean) pct: 0.14;'
          ' mean(mean) err: 3.00\n'
          '     from results.csv [arm=static, seed>=1] min(density) err: 90.0 -->\n')
  assert _why(tmp_path) == []


def test_a_paper_number_absent_from_anchor_md_is_rejected(tmp_path):
  readme = ('The paper: 1.44 and 1.48 (appendix); ours 97.51.\n\n'
            '| claim | paper | ours |\n|---|---|---|\n| error | 1.64 | 2.49 |\n\n'
            '<!-- from results.csv [arm=dense] mean pct: 97.51; mean err: 2.49 -->\n'
            '<!-- check_numbers: paper: 1.44 1.48 (appendix) -->\n')
  _folder(tmp_path, readme, anchor='> | RigL | 1.44 (1.48) |\n\n> dense 1.64\n')
  assert _why(tmp_path) == []
  _folder(tmp_path, readme, anchor='> | RigL | 1.44 |\n')
  assert sorted(n for n, _ in _why(tmp_path)) == ['1.48', '1.64']
  (tmp_path / 'anchor.md').unlink()
  assert all('no anchor.md' in why for _, why in _why(tmp_path))


def test_a_correct_entry_with_an_explicit_transform_is_accepted(tmp_path):
  # 0.97512 -> 97.51 % (pct), error 2.49 % (err); density 0.1 -> 90.0 %
  # sparse (err); a difference printed without its sign (neg); a text cell.
  results = RESULTS + 'static-minus-dense,0,0.9,-0.609,,0.1\n'
  claims = 'claim,ours\ndense error,"2.49 ± 0.21 (n=1)"\n'
  _folder(tmp_path, '| arm | accuracy | error |\n|---|---|---|\n| dense | 97.51 | 2.49 ± 0.21 |\n\n'
          'Static at 90.0% sparsity is 0.61 points below dense (-0.61).\n\n'
          '<!-- from results.csv [arm=dense] mean pct: 97.51; mean err: 2.49\n'
          '     from results.csv [arm=static, seed=0] density err: 90.0\n'
          '     from results.csv [arm=static-minus-dense] mean neg: 0.61; mean: -0.61 -->\n'
          '<!-- from claims.csv [claim~dense] ours: 2.49 0.21 -->\n', results=results)
  (tmp_path / 'claims.csv').write_text(claims)
  assert _why(tmp_path) == []
  explained = dict((n.number, how) for n, how in check_numbers.explain_folder(tmp_path))
  assert 'results.csv:2 mean=0.97512 pct' in explained['97.51']


def test_a_stale_entry_and_an_unreadable_one_are_problems(tmp_path):
  _folder(tmp_path, 'Dense: 97.51.\n\n<!-- from results.csv [arm=dense] mean pct: 97.51 97.5\n'
          '     from results.csv [arm=dense] mean halfpct: 48.76 -->\n')
  why = _why(tmp_path)
  assert [n for n, _ in why] == ['97.5', 'from']
  assert 'not printed' in why[0][1] and "unknown transform 'halfpct'" in why[1][1]


def test_unsourced_numbers_warn_and_a_phrase_declares_one_occurrence(tmp_path, capsys):
  # 90.0 is sourced (a sparsity); "about 90.0 epochs" is not, and only that
  # occurrence is declared unsourced.
  _folder(tmp_path, 'Sparsity 90.0%, after about 90.0 epochs; a gap of 0.2 points.\n\n'
          '<!-- from results.csv [arm=static, seed=0] density err: 90.0 -->\n'
          '<!-- check_numbers: unsourced: "about 90.0 epochs" (a guess); 0.2 (lost) -->\n')
  report = check_numbers.report_folder(tmp_path)
  assert report.problems == []
  assert [(p.number, p.line) for p in report.unsourced] == [('90.0', 1), ('0.2', 1)]
  kinds = [kind for _, kind, _ in report.numbers]
  assert kinds == ['from', 'unsourced', 'unsourced']
  assert check_numbers.main([str(tmp_path)]) == 1
  assert 'warning: README.md:1: 0.2: declared unsourced' in capsys.readouterr().out


# experiments/summary.py: the headline table.

_summary_spec = importlib.util.spec_from_file_location('experiments_summary',
                                                       EXPERIMENTS / 'summary.py')
summary = importlib.util.module_from_spec(_summary_spec)
sys.modules.setdefault('experiments_summary', summary)   # dataclasses look the module up
_summary_spec.loader.exec_module(summary)


def test_summary_csv_is_current():
  done = subprocess.run([sys.executable, str(EXPERIMENTS / 'summary.py'), '--check'],
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stdout + done.stderr


def test_readme_prints_the_summary_table():
  table = summary.markdown(summary.build())
  assert table in (EXPERIMENTS / 'README.md').read_text(), (
      'experiments/README.md: paste the output of python experiments/summary.py --markdown')


def test_summary_intervals():
  # Student-t quantiles (scipy.stats.t.ppf(0.975, df)), and the intervals on small cases.
  for df, q in ((1, 12.7062047), (2, 4.3026527), (4.7, 2.6207261), (30, 2.0422725)):
    assert abs(summary.T975(df) - q) < 1e-6
  v = summary.t_over([1.0, 2.0, 3.0])
  assert (v.ours, v.n, v.kind) == (2.0, 3, 't')
  assert abs(v.high - 2.0 - 4.3026527 / 3 ** 0.5) < 1e-6
  assert summary.t_over([1.0]).low is None
  w = summary.welch(5.0, 1.0, 3, 3.0, 1.0, 3)
  assert abs(w.ours - 2.0) < 1e-12 and abs(w.high - 2.0 - 2.7764451 * (2 / 3) ** 0.5) < 1e-6
  f = summary.fieller([18.0, 20.0, 22.0], [9.0, 10.0, 11.0])   # an exact ratio of 2
  assert abs(f.ours - 2.0) < 1e-12 and abs(f.low - 2.0) < 1e-9 and abs(f.high - 2.0) < 1e-9
  assert summary.fieller([1.0, -1.0, 0.5], [0.1, -0.1, 0.05]).low is None  # unbounded


def test_merge_csv_keeps_recorded_rows_a_rerun_lacks(tmp_path):
  """A pipeline rerun in a new session records its runs over the CSV without
  erasing rows an earlier session measured; `keep_old` guards a claim the
  rerun cannot judge."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'experiments'))
  from pipeline_tools import merge_csv, read_csv, write_csv
  path = tmp_path / 'claims.csv'
  write_csv(path, [{'claim': 'a', 'verdict': 'pass'}, {'claim': 'b', 'verdict': 'miss'},
                   {'claim': 'c', 'verdict': 'pass'}])
  merge_csv(path, [{'claim': 'c', 'verdict': 'not run'}, {'claim': 'b', 'verdict': 'pass'},
                   {'claim': 'd', 'verdict': 'miss'}], ('claim',),
            keep_old=lambda old, new: new['verdict'] == 'not run')
  assert [(r['claim'], r['verdict']) for r in read_csv(path)] == [
      ('a', 'pass'), ('b', 'pass'), ('c', 'pass'), ('d', 'miss')]


def test_kept_runs_round_trip_and_recording_refuses_to_lose_a_measured_run(tmp_path):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'experiments'))
  import numpy as np
  from pipeline_tools import load_run, refuse_to_lose, save_run, write_csv
  save_run(tmp_path / 'kept', 'a_s0', {'nll': np.arange(6, dtype=np.float32).reshape(2, 3)},
           {'curve': [[0, 9.5], [100, 4.25]], 'peak_rss_mib': 12.5})
  arrays, meta = load_run(tmp_path / 'kept', 'a_s0')
  assert arrays['nll'].dtype == np.float32 and arrays['nll'][1, 2] == 5.0
  assert meta == {'curve': [[0, 9.5], [100, 4.25]], 'peak_rss_mib': 12.5}
  assert load_run(tmp_path / 'kept', 'b_s0') is None
  path = tmp_path / 'runs.csv'
  write_csv(path, [{'run': 'a_s0', 'x': 1}, {'run': 'b_s0', 'x': 2}])
  refuse_to_lose(path, ('run',), {('a_s0',), ('c_s0',)}, {('a_s0',)})   # b_s0 is not planned
  with pytest.raises(SystemExit, match='b_s0'):
    refuse_to_lose(path, ('run',), {('a_s0',), ('b_s0',)}, {('a_s0',)})
