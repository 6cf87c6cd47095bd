"""The report: tables checked against hand-computed numbers, CSV contents,
valid PNGs, and the errors for missing files and malformed lines."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from sparsejax.programs import report as rep
from sparsejax.programs import tables

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
ARMS = ('ticket', 'reinit', 'random_prune')


def acc(arm, level, replicate):
  """Ticket accuracy rises with the level; controls fall below it."""
  base = {'ticket': 0.90 + 0.01 * level, 'reinit': 0.88 - 0.02 * level,
          'random_prune': 0.87 - 0.03 * level}[arm]
  return base + 0.005 * replicate


def lottery_rows(replicates=3, levels=4):
  rows = []
  for r in range(replicates):
    for level in range(levels):
      for arm in ARMS:
        if arm != 'ticket' and level == 0:
          continue                     # controls branch off pruned levels only
        row = {'replicate': r, 'seed': r, 'level': level, 'arm': arm, 'density': 0.8 ** level,
               'final': {'test_accuracy': acc(arm, level, r), 'test_loss': 0.3},
               'early_stop': None, 'curve': [], 'status': 'ok', 'workdir': f'/runs/{r}/{level}'}
        if arm == 'ticket':
          row['early_stop'] = {'step': 1000 + 100 * level + 50 * r, 'validation_loss': 0.1,
                               'test_accuracy': acc(arm, level, r) + 0.01}
          row['curve'] = [[s, {'test_accuracy': acc(arm, level, r) * s / 300}]
                          for s in (100, 200, 300)]
          row['layer_density'] = {'hidden_0/kernel': 0.8 ** level, 'output/kernel': 0.9 ** level}
        if (r, level, arm) == (2, 3, 'reinit'):
          row = {k: v for k, v in row.items() if k not in ('final', 'early_stop', 'curve')}
          row.update(status='failed', error='RuntimeError: NaN loss at step 17\ntraceback...')
        rows.append(row)
  return rows


def write_rows(directory, rows, extra_lines=()):
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / 'results.jsonl', 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n\n')    # blank lines are skipped
    for line in extra_lines:
      f.write(line + '\n')
  return directory


def table_cells(text):
  """{level: {column: cell}} from a markdown table's lines."""
  lines = [l for l in text.splitlines() if l.startswith('|')]
  header = [c.strip() for c in lines[0].strip('|').split('|')]
  out = {}
  for l in lines[2:]:
    cells = [c.strip() for c in l.strip('|').split('|')]
    out[cells[0]] = dict(zip(header, cells))
  return out


def mean_std_cell(values, decimals=2, scale=100):
  v = np.asarray(values) * scale
  return f'{v.mean():.{decimals}f} ± {v.std(ddof=1):.{decimals}f} (n={len(v)})'


def test_load_results_reads_dirs_and_files(tmp_path):
  rows = lottery_rows()
  a = write_rows(tmp_path / 'a', rows[:5])
  b = write_rows(tmp_path / 'b', rows[5:])
  assert rep.load_results([a, b / 'results.jsonl']) == rows
  assert rep.load_results(str(a)) == rows[:5]
  # a `sparsejax lottery` workdir: its results one folder down, in lottery_<hash>/
  write_rows(tmp_path / 'lottery' / 'lottery_0123456789', rows)
  assert rep.load_results(tmp_path / 'lottery') == rows
  assert 'ticket' in rep.report(tmp_path / 'lottery')


def test_missing_and_malformed_files(tmp_path):
  with pytest.raises(ValueError, match='results.jsonl'):
    rep.load_results([tmp_path / 'nowhere'])
  d = write_rows(tmp_path / 'bad', lottery_rows()[:1], extra_lines=['{"level": 1, '])
  # line 1 is the row, line 2 is blank, line 3 is cut short
  with pytest.raises(ValueError, match=r'results\.jsonl, line 3'):
    rep.load_results(d)
  write_rows(tmp_path / 'list', [], extra_lines=['[1, 2]'])
  with pytest.raises(ValueError, match='line 1: expected a JSON object'):
    rep.load_results(tmp_path / 'list')


def test_level_table_values(tmp_path):
  rows = rep.load_results(write_rows(tmp_path, lottery_rows()))
  text = rep.level_table(rows)
  cells = table_cells(text)
  assert list(cells) == ['0', '1', '2', '3']
  assert list(cells['1']) == ['level', '% weights remaining', 'ticket test_accuracy',
                              'reinit test_accuracy', 'random_prune test_accuracy',
                              'early-stop iter (ticket)']
  # Ticket at level 1: 91.0, 91.5, 92.0 -> mean 91.50, sample std 0.50.
  assert cells['1']['ticket test_accuracy'] == '91.50 ± 0.50 (n=3)'
  by_hand = mean_std_cell([acc('ticket', 1, r) for r in range(3)])
  assert cells['1']['ticket test_accuracy'] == by_hand
  assert cells['2']['% weights remaining'] == '64.0'
  assert cells['3']['% weights remaining'] == '51.2'
  assert cells['0']['% weights remaining'] == '100.0'
  assert cells['0']['reinit test_accuracy'] == '-'
  # The failed reinit run at level 3 is not averaged: n=2.
  assert cells['3']['reinit test_accuracy'] == mean_std_cell([acc('reinit', 3, r) for r in (0, 1)])
  assert cells['3']['reinit test_accuracy'].endswith('(n=2)')
  # Early stop at level 2: 1200, 1250, 1300 -> 1250 ± 50.
  assert cells['2']['early-stop iter (ticket)'] == '1250 ± 50 (n=3)'
  assert 'failed: replicate 2, level 3, arm reinit: RuntimeError: NaN loss at step 17' in text
  assert 'traceback' not in text


def test_level_table_early_stop_metric_and_arms(tmp_path):
  rows = lottery_rows()
  text = rep.level_table(rows, metric='early_stop_test_accuracy', arms=['ticket'])
  cells = table_cells(text)
  assert list(cells['2']) == ['level', '% weights remaining',
                              'ticket early_stop_test_accuracy', 'early-stop iter (ticket)']
  expected = mean_std_cell([acc('ticket', 2, r) + 0.01 for r in range(3)])
  assert cells['2']['ticket early_stop_test_accuracy'] == expected
  loss = table_cells(rep.level_table(rows, metric='test_loss'))
  assert loss['1']['ticket test_loss'].startswith('0.3000 ± 0.0000')


def test_level_table_without_a_validation_split_has_no_early_stop_column():
  rows = [{**r, 'early_stop': None} for r in lottery_rows()]
  cells = table_cells(rep.level_table(rows))
  assert not any('early-stop' in column for column in cells['1'])
  assert cells['1']['ticket test_accuracy'] == '91.50 ± 0.50 (n=3)'


def test_n1_formatting():
  rows = lottery_rows(replicates=1)
  cells = table_cells(rep.level_table(rows))
  assert cells['1']['ticket test_accuracy'] == f"{100 * acc('ticket', 1, 0):.2f} (n=1)"
  assert cells['1']['early-stop iter (ticket)'] == '1100 (n=1)'
  assert '±' not in cells['1']['reinit test_accuracy']


def sweep_rows():
  rows = []
  for method in ('rigl', 'set'):
    for sparsity in (0.8, 0.9):
      for seed in range(3):
        row = {'replicate': seed, 'seed': seed, 'level': None, 'arm': method,
               'setting': {'sparsity': sparsity, 'steps': 100}, 'density': 1 - sparsity,
               'final': {'test_accuracy': 0.9 - sparsity / 10 + 0.01 * seed}, 'status': 'ok'}
        if (method, sparsity, seed) == ('set', 0.9, 1):
          row = {k: v for k, v in row.items() if k != 'final'}
          row.update(status='failed', error='out of memory')
        rows.append(row)
  return rows


def test_summary_table_and_csv(tmp_path):
  rows = sweep_rows()
  text = rep.summary_table(rows)
  lines = [l for l in text.splitlines() if l.startswith('|')]
  header = [c.strip() for c in lines[0].strip('|').split('|')]
  assert header == ['arm', 'sparsity', 'steps', 'test_accuracy']
  body = [[c.strip() for c in l.strip('|').split('|')] for l in lines[2:]]
  assert [b[:2] for b in body] == [['rigl', '0.8'], ['rigl', '0.9'], ['set', '0.8'], ['set', '0.9']]
  assert body[0][3] == mean_std_cell([0.82, 0.83, 0.84])
  assert body[3][3] == (mean_std_cell([0.81, 0.83]) + '; failed (1 of 3): out of memory')

  path = rep.write_csv(rows, tmp_path / 'sweep.csv')
  with open(path) as f:
    got = list(csv.DictReader(f))
  assert list(got[0]) == ['arm', 'sparsity', 'steps', 'n', 'mean', 'std', 'n_failed', 'density']
  first, last = got[0], got[3]
  assert (first['arm'], float(first['sparsity']), int(first['n']), int(first['n_failed'])) == (
      'rigl', 0.8, 3, 0)
  assert float(first['mean']) == pytest.approx(0.83)
  assert float(first['std']) == pytest.approx(0.01)
  assert float(first['density']) == pytest.approx(0.2)
  assert (last['arm'], int(last['n']), int(last['n_failed'])) == ('set', 2, 1)
  assert float(last['std']) == pytest.approx(np.std([0.81, 0.83], ddof=1))


def test_seed_restating_keys_do_not_split_groups():
  """A per-seed checkpoint path groups the 3 seeds together; the accuracy
  right after pruning is read with the after_pruning_ prefix."""
  rows = [{'arm': 'magnitude', 'seed': s, 'setting': {'sparsity': sp, 'init': f'/dense/seed_{s}'},
           'final': {'test_accuracy': 0.9 + 0.01 * s},
           'after_pruning': {'test_accuracy': 0.5 + 0.01 * s}}
          for s in (0, 1, 2) for sp in (0.5, 0.9)]
  assert tables.seed_keys(rows) == {'init'}
  names, groups = rep.group_rows(rows)
  assert names == ['arm', 'sparsity'] and [len(m) for _, m in groups] == [3, 3]
  text = rep.summary_table(rows, metric='after_pruning_test_accuracy')
  assert mean_std_cell([0.5, 0.51, 0.52]) in text
  # a key equal for every seed, or one that varies within a seed, is kept
  shared = [dict(r, setting=dict(r['setting'], init='/dense')) for r in rows]
  assert tables.seed_keys(shared) == set()
  rows[0]['after_pruning'] = None                  # a training run: nothing recorded
  assert rep.metric_value(rows[0], 'after_pruning_test_accuracy') is None


def test_cost_table(tmp_path):
  """Fine-tuning rows get a cost table: accuracy mean ± std, cost means."""
  def row(arm, seed, acc, ms):
    return {'arm': arm, 'seed': seed, 'setting': {'finetune.rows': 8},
            'final': {'test_accuracy': acc},
            'peft': {'trainable_params': 100, 'bytes_grads': 2 ** 20, 'bytes_opt_state': 2 ** 21,
                     'bytes_total': 5 * 2 ** 20, 'peak_rss_mb': 900.0, 'ms_per_step': ms}}
  rows = [row('row', 0, 0.90, 1.0), row('row', 1, 0.92, 3.0), row('lora', 0, 0.91, 2.0),
          {'arm': 'lora', 'seed': 1, 'status': 'failed', 'error': 'boom'}]
  text = rep.cost_table(rows)
  lines = [[c.strip() for c in l.strip('|').split('|')] for l in text.splitlines()
           if l.startswith('|')]
  assert lines[0] == ['arm', 'finetune.rows', 'test_accuracy', 'trainable params',
                      'grads+opt+idx MiB', 'total MiB', 'peak RSS MiB', 'ms/step']
  assert lines[2] == ['lora', '8', '91.00 (n=1)', '100', '3.000', '5.00', '900', '2.00']
  assert lines[3] == ['row', '8', mean_std_cell([0.90, 0.92]), '100', '3.000', '5.00', '900',
                      '2.00']
  assert 'Fine-tuning costs' in rep.report(write_rows(tmp_path / 'ft', rows))
  with pytest.raises(ValueError, match='no finished rows with fine-tuning costs'):
    rep.cost_table(rows[3:])


def test_summary_all_failed_group():
  rows = [{'arm': 'snip', 'setting': {'sparsity': 0.99}, 'status': 'failed', 'error': 'boom'}] * 2
  text = rep.summary_table(rows)
  assert '| failed (2 of 2): boom' in text


def assert_png(path):
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  assert len(data) > 5000


def test_plots(tmp_path):
  rows = lottery_rows()
  assert_png(rep.plot_accuracy_vs_density(rows, tmp_path / 'acc.png'))
  assert_png(rep.plot_accuracy_vs_density(lottery_rows(replicates=1), tmp_path / 'one.png',
                                          title='one replicate'))
  assert_png(rep.plot_accuracy_vs_density(sweep_rows(), tmp_path / 'sweep.png'))
  assert_png(rep.plot_curves(rows, tmp_path / 'curves.png', levels=[0, 3]))
  assert_png(rep.plot_layer_density(rows[-3], tmp_path / 'layers.png'))
  with pytest.raises(ValueError, match='nothing to plot'):
    rep.plot_curves(rows, tmp_path / 'none.png', levels=[1], arm='reinit')
  with pytest.raises(ValueError, match='layer_density'):
    rep.plot_layer_density(rows[1] | {'layer_density': {}}, tmp_path / 'x.png')


def test_plots_read_without_colour_and_at_high_sparsity(tmp_path, monkeypatch):
  from sparsejax.programs import plots
  figures = []
  monkeypatch.setattr(plots, '_save', lambda fig, path: figures.append(fig) or path)
  rows = [{'arm': f'arm{i}', 'density': d, 'final': {'test_accuracy': 0.9 - i / 100 - d / 10},
           'status': 'ok'} for i in range(7) for d in (1.0, 0.1)]
  rep.plot_accuracy_vs_density(rows, tmp_path / 'seven.png')
  lines = figures[-1].axes[0].get_lines()
  assert len(lines) == 7
  assert len({(l.get_marker(), l.get_linestyle()) for l in lines}) == 7   # apart without colour
  sparse = {'arm': 'ticket', 'level': 9, 'density': 0.013,
            'layer_density': {'hidden_0/kernel': 0.01, 'hidden_1/kernel': 0.01,
                              'output/kernel': 0.5}}
  rep.plot_layer_density(sparse, tmp_path / 'layers.png')
  ax = figures[-1].axes[0]
  assert ax.get_yscale() == 'log' and ax.get_ylim()[0] <= 0.5       # 1% bars stay visible
  rep.plot_layer_density({**sparse, 'layer_density': {'a': 0.5, 'b': 0.9}}, tmp_path / 'l.png')
  assert figures[-1].axes[0].get_yscale() == 'linear'


def test_mean_curve():
  rows = [{'curve': [[10, {'m': 0.2}], [20, {'m': 0.4}]]},
          {'curve': [[10, {'m': 0.4}], [20, {'other': 1.0}]]}]
  steps, mean, std = rep.mean_curve(rows, 'm')
  np.testing.assert_array_equal(steps, [10, 20])
  np.testing.assert_allclose(mean, [0.3, 0.4])
  np.testing.assert_allclose(std, [np.std([0.2, 0.4], ddof=1), 0.0])


def test_spread():
  assert rep.spread([0, 1, 2]) == [0, 1, 2]
  assert rep.spread(list(range(10))) == [0, 3, 6, 9]


def test_report_lottery(tmp_path):
  runs = write_rows(tmp_path / 'run', lottery_rows(levels=6))
  text = rep.report([runs])
  assert text.startswith('| level')
  for name in ('report.md', 'report.csv', 'accuracy_vs_density.png', 'curves.png',
               'layer_density.png'):
    assert str(runs / name) in text
  for name in ('accuracy_vs_density.png', 'curves.png', 'layer_density.png'):
    assert_png(runs / name)
  md = (runs / 'report.md').read_text()
  assert '91.50 ± 0.50 (n=3)' in md and '![curves](curves.png)' in md
  with open(runs / 'report.csv') as f:
    got = list(csv.DictReader(f))
  assert [g['level'] for g in got[:3]] == ['0', '1', '1']
  assert sum(int(g['n_failed']) for g in got) == 1


def test_report_sweep_to_out_dir(tmp_path):
  runs = write_rows(tmp_path / 'sweep', sweep_rows())
  out = tmp_path / 'out'
  text = rep.report(runs, out_dir=out, metric='test_accuracy')
  assert text.startswith('| arm')
  assert 'failed (1 of 3): out of memory' in text
  assert (out / 'report.md').exists() and (out / 'report.csv').exists()
  assert_png(out / 'accuracy_vs_density.png')
  assert not (out / 'curves.png').exists()
  with pytest.raises(ValueError, match='no result rows'):
    rep.report(write_rows(tmp_path / 'empty', []))


def test_import_does_not_load_matplotlib():
  code = ('import sys; import sparsejax.programs.report; '
          'print(any(m.startswith("matplotlib") for m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False'


def test_report_mask_dynamics(tmp_path):
  from sparsejax.programs import plots
  work = tmp_path / 'work'
  work.mkdir()
  lines = [{'kind': 'train', 'step': s, 'loss': 1.0} for s in range(1, 4)]
  lines += [{'kind': 'mask_update', 'step': s, 'dropped': 10 - s // 100, 'grown': 10 - s // 100,
             'active': 100, 'overlap_previous': 0.9, 'overlap_initial': 1 - s / 1000}
            for s in (100, 200, 300)]
  (work / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
  assert len(rep.mask_update_rows(work)) == 3
  assert_png(plots.plot_mask_dynamics(lines, tmp_path / 'single.png'))
  rows = sweep_rows()
  rows[0]['workdir'] = str(work)
  runs = write_rows(tmp_path / 'sweep', rows)
  text = rep.report(runs)
  assert str(runs / 'mask_dynamics_0.png') in text
  assert_png(runs / 'mask_dynamics_0.png')
  assert not (runs / 'mask_dynamics_1.png').exists()
  assert '![mask_dynamics_0](mask_dynamics_0.png)' in (runs / 'report.md').read_text()
