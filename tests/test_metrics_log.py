"""The metrics writer without a terminal: plain progress lines on stderr, and
mask_update rows kept and truncated on resume like every other row."""

import pathlib
import re
import sys

import numpy as np

import pytest

from sparsejax.train import metrics as metrics_lib

MLP = str(pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'mnist1d_mlp.py')


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
  from sparsejax.train.task import LoopSettings, Task
  from conftest import LinenMLP
  x = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  data = Dataset('d', ArraySource(x, y), ArraySource(x, y), None, num_classes=2,
                 input_shape=(8,), input_dtype=np.float32)
  loop.train(Task(dataset=data, optimizer=optax.adam(1e-2), model=LinenMLP(), batch_size=16,
                  loop=LoopSettings(steps=60, log_every=20, eval_every=60, checkpoint_every=60)),
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


class ListWriter:
  """A metric writer with clu.metric_writers' methods, keeping what it gets."""

  def __init__(self, workdir=None):
    self.scalars, self.hparams, self.closed = [], [], False

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))

  def write_hparams(self, hparams):
    self.hparams.append(dict(hparams))

  def flush(self):
    pass

  def close(self):
    self.closed = True


def test_mask_update_tags_reach_every_writer(tmp_path):
  got = ListWriter()
  w = metrics_lib.MetricsWriter(tmp_path, total_steps=10, progress=False, tensorboard=False,
                                writers=(lambda workdir: got,), hparams={'seed': 3})
  w.write('mask_update', 5, {'dropped': 2, 'overlap_initial': 0.5})
  w.write('train', 5, {'loss': 1.0, 'finite': True})
  w.write('train', 6, {'loss': 0.5}, summary=False)       # per-step rows: JSONL only
  w.close()
  assert got.scalars == [(5, {'mask/dropped': 2, 'mask/overlap_initial': 0.5}),
                         (5, {'train/loss': 1.0})]
  assert got.hparams == [{'seed': 3}] and got.closed


def _tfrecords(path):
  """The Event protos of a TensorBoard event file (TFRecord framing)."""
  import struct
  from tensorboardX.proto import event_pb2
  data, i, out = path.read_bytes(), 0, []
  while i < len(data):
    (n,) = struct.unpack('<Q', data[i:i + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[i + 12:i + 12 + n])
    out.append(event)
    i += 12 + n + 4
  return out


def test_config_writers_get_scalars_and_the_config_as_hparams(tmp_path, monkeypatch):
  """`train.writers` names a factory by import path; it gets the logged
  scalars and, once, the run's config (dotted keys) as hparams, and so do
  the TensorBoard event files (HParams plugin), next to metrics.jsonl as
  before. A bad entry is one config error."""
  pytest.importorskip('tensorboardX')
  from sparsejax import config as config_lib, experiment
  (tmp_path / 'listwriters.py').write_text(
      'from test_metrics_log import ListWriter\nMADE = []\n'
      'def make(workdir):\n  MADE.append(ListWriter(workdir))\n  return MADE[-1]\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, 'listwriters', raising=False)
  config = config_lib.apply_overrides(config_lib.load_config(MLP), {
      'train.steps': 20, 'train.log_every': 10, 'train.eval_every': 20,
      'train.checkpoint_every': 20, 'train.writers': ('listwriters:make',)})
  experiment.train_and_evaluate(config, tmp_path / 'run', progress=False)
  import listwriters
  [got] = listwriters.MADE
  assert got.closed and [step for step, _ in got.scalars] == [10, 20, 20]
  assert 'train/loss' in got.scalars[0][1] and 'eval/test_accuracy' in got.scalars[2][1]
  [hp] = got.hparams
  assert hp['config.train.steps'] == 20 and hp['config.model.name'] == 'mnist1d_mlp'
  assert hp['resolved.schedule.type'].endswith('Dense')
  events = [e for f in (tmp_path / 'run' / 'tensorboard').iterdir() for e in _tfrecords(f)]
  plugins = {v.metadata.plugin_data.plugin_name for e in events for v in e.summary.value}
  assert 'hparams' in plugins
  with pytest.raises(config_lib.ConfigError, match="train.writers"):
    config_lib.to_settings(config_lib.apply_overrides(config, {'train.writers': ('nocolon',)}))
