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
    w.progress(310, loss=0.4, steps_per_sec=None)   # not measured yet (only a compile so far)
    w.close()
    lines = capsys.readouterr().err.strip().splitlines()
    stamp = r'\d\d:\d\d:\d\d  '                  # every line starts with the time of day
    assert re.fullmatch(stamp + re.escape('step 200/1000  loss 0.4312  acc 0.8810  density '
                                          '0.1000  12.3 steps/s  ETA 1m05s'), lines[0])
    assert re.fullmatch(stamp + r'step 300/1000  loss 0\.4000  [\d.]+ steps/s  ETA \S+',
                        lines[1])
    assert re.fullmatch(stamp + r'step 310/1000  loss 0\.4000  ETA \?', lines[2])
    assert len(lines) == 3


def test_first_rate_leaves_out_compilation(tmp_path):
  """The first logged steps/s (and so the first ETA) starts after the step
  program's first call, which compiles it: with compilation counted, the
  first window's rate would be a small fraction of the next one's."""
  import optax
  from sparsejax.data import ArraySource, Dataset
  from sparsejax.train import loop
  from sparsejax.train.task import Task
  from conftest import LinenMLP
  x = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  data = Dataset('d', ArraySource(x, y), ArraySource(x, y), None, num_classes=2,
                 input_shape=(8,), input_dtype=np.float32)
  loop.train(Task(dataset=data, optimizer=optax.adam(1e-2), model=LinenMLP(), steps=60,
                  batch_size=16, log_every=20, eval_every=60, checkpoint_every=60),
             tmp_path, progress=False)
  rates = [r['steps_per_sec'] for r in metrics_lib.read_rows(tmp_path / 'metrics.jsonl')
           if r['kind'] == 'train' and 'steps_per_sec' in r]
  assert len(rates) == 3 and rates[0] > 0.2 * rates[1], rates


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
