"""The metrics writer without a terminal: plain progress lines on stderr, and
mask_update rows kept and truncated on resume like every other row."""

import re

import numpy as np

from sparsejax.train import metrics as metrics_lib


def test_plain_progress_lines(tmp_path, capsys):
  quiet = metrics_lib.MetricsWriter(tmp_path / 'quiet', total_steps=10, progress=False,
                                    tensorboard=False)
  quiet.progress(5, loss=0.1)       # progress=False (programs running many runs): silent
  quiet.close()
  assert capsys.readouterr().err == ''
  for progress in (True,):          # capsys's stderr is not a terminal
    w = metrics_lib.MetricsWriter(tmp_path / str(progress), total_steps=1000, start_step=0,
                                  progress=progress, tensorboard=False)
    assert w._bar is None
    w.progress(200, loss=0.43119, acc=np.float32(0.881), density=0.1, steps_per_sec=12.3)
    w.progress(300, loss=0.4)        # no rate given: from wall time since the writer started
    w.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == ('step 200/1000  loss 0.4312  acc 0.8810  density 0.1000  '
                        '12.3 steps/s  ETA 1m05s')
    assert re.fullmatch(r'step 300/1000  loss 0\.4000  [\d.]+ steps/s  ETA \S+', lines[1])
    assert len(lines) == 2


def test_format_helpers():
  assert metrics_lib._fmt(12345.678) == '1.235e+04'
  assert metrics_lib._fmt(3) == '3'
  assert metrics_lib._fmt(float('nan')) == 'nan'
  assert metrics_lib._duration(5.4) == '5s'
  assert metrics_lib._duration(7322) == '2h02m'


def test_mask_update_rows_resume(tmp_path):
  values = {'dropped': 3, 'grown': 3, 'active': 50, 'overlap_previous': 0.94,
            'overlap_initial': 0.8}
  w = metrics_lib.MetricsWriter(tmp_path, total_steps=100, progress=False, tensorboard=False)
  w.write_steps('train', 1, ['loss'], np.array([[1.0]] * 40))
  for step in (10, 20, 30, 40):
    w.write('mask_update', step, values)
  w.close()
  # Resume from a checkpoint at step 20: later rows of every kind go.
  w = metrics_lib.MetricsWriter(tmp_path, total_steps=100, start_step=20, progress=False,
                                tensorboard=False)
  w.write('mask_update', 30, {**values, 'grown': 4})
  w.close()
  rows = metrics_lib.read_rows(tmp_path / 'metrics.jsonl')
  masks = [r for r in rows if r['kind'] == 'mask_update']
  assert [r['step'] for r in masks] == [10, 20, 30]
  assert masks[0] == {'kind': 'mask_update', 'step': 10, **values}
  assert masks[-1]['grown'] == 4
  assert max(r['step'] for r in rows if r['kind'] == 'train') == 20


def test_mask_update_tensorboard_tags(tmp_path):
  tags = []

  class FakeTB:
    def add_scalar(self, tag, value, step):
      tags.append((tag, value, step))

  w = metrics_lib.MetricsWriter(tmp_path, total_steps=10, progress=False, tensorboard=False)
  w._tb = FakeTB()
  w.write('mask_update', 5, {'dropped': 2, 'overlap_initial': 0.5})
  w.write('train', 5, {'loss': 1.0})
  assert tags == [('mask/dropped', 2, 5), ('mask/overlap_initial', 0.5, 5),
                  ('train/loss', 1.0, 5)]
  w._tb = None
  w.close()
