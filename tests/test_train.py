"""The training stack end to end, in process: outputs, determinism, resume,
NaN stops, bad checkpoints, other data sources, every config file."""

import json
import pathlib

import jax
import numpy as np
import pytest

from sparsejax import experiment
from sparsejax import config as config_lib
from sparsejax.train import checkpoint as ckpt_lib, inspection, loop
from sparsejax.train import metrics as metrics_lib

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / 'configs'


def small(path='mnist1d_rigl.py', **overrides):
  """A config file shrunk to a few quick steps."""
  config = config_lib.load_config(CONFIGS / path)
  base = {'train.steps': 40, 'train.log_every': 5, 'train.eval_every': 20,
          'train.checkpoint_every': 10, 'model.options.hidden': 64}
  if config.pruning.schedule in ('rigl', 'set', 'gradual'):
    base.update({'pruning.every': 10, 'pruning.end': 30})
  base.update(overrides)
  return config_lib.apply_overrides(config, base)


def final_state(workdir):
  return ckpt_lib.restore_raw(inspection.resolve(workdir))


def comparable_rows(workdir):
  return [{k: v for k, v in r.items() if k not in metrics_lib.TIMING_KEYS}
          for r in metrics_lib.read_rows(pathlib.Path(workdir) / 'metrics.jsonl')]


def assert_same_state(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_writes_everything_and_prunes_exactly(tmp_path):
  summary = experiment.train_and_evaluate(small(), tmp_path, progress=False)
  assert summary['density'] == pytest.approx(0.1, abs=1e-3)
  assert 0.1 < summary['eval']['test']['accuracy'] <= 1.0
  for name in ('config.json', 'metrics.jsonl', 'summary.json'):
    assert (tmp_path / name).exists(), name
  assert any((tmp_path / 'tensorboard').iterdir())
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints' / 'steps').iterdir()) == [20, 30, 40]
  assert (tmp_path / 'checkpoints' / 'named' / 'init').is_dir()
  rows = metrics_lib.read_rows(tmp_path / 'metrics.jsonl')
  train = [r for r in rows if r['kind'] == 'train']
  assert [r['step'] for r in train] == list(range(1, 41))
  assert all('learning_rate' in r and 'steps_per_sec' in r for r in train if r['step'] % 5 == 0)
  evals = [r for r in rows if r['kind'] == 'eval']
  assert [r['step'] for r in evals] == [20, 40]
  assert set(evals[-1]['layer_density']) == {'hidden_0/kernel', 'hidden_1/kernel', 'output/kernel'}
  # Pruned weights are exactly zero in the saved params, counts match the masks.
  table = inspection.layer_table(final_state(tmp_path))
  masked = [r for r in table if r['masked']]
  assert len(masked) == 3
  state = final_state(tmp_path)
  for r in masked:
    w = np.asarray(_leaf(state['params'], r['path']))
    assert np.count_nonzero(w) <= r['active']
  assert sum(r['active'] for r in masked) == summary['active']


def _leaf(tree, path):
  for key in path.split('/'):
    tree = tree[key]
  return tree


def test_same_seed_same_results(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  experiment.train_and_evaluate(small(), a, progress=False)
  experiment.train_and_evaluate(small(), b, progress=False)
  assert_same_state(final_state(a), final_state(b))
  assert comparable_rows(a) == comparable_rows(b)
  c = tmp_path / 'c'
  experiment.train_and_evaluate(small(seed=1), c, progress=False)
  assert comparable_rows(a) != comparable_rows(c)


def test_resume_in_process_equals_uninterrupted(tmp_path):
  full, part = tmp_path / 'full', tmp_path / 'part'
  experiment.train_and_evaluate(small(), full, progress=False)
  # Stop after 20 steps by asking for fewer steps, then continue the same run: the
  # run is the same config except for train.steps, so copy the checkpoint over.
  experiment.train_and_evaluate(small(), part, progress=False)
  ckpts = part / 'checkpoints' / 'steps'
  for p in ckpts.iterdir():
    if int(p.name) > 20:
      import shutil
      shutil.rmtree(p)
  summary = experiment.train_and_evaluate(small(), part, progress=False)
  assert summary['resumed_from'] == 20
  assert_same_state(final_state(full), final_state(part))
  assert comparable_rows(full) == comparable_rows(part)


def test_sigterm_during_the_final_save_waits_for_it(tmp_path, monkeypatch):
  """A SIGTERM after the last step's check (here: while the final checkpoint
  is written) lets that save finish, then stops the run as one mid-training
  does; running again only writes the summary, with the uninterrupted result."""
  import os
  import signal
  import threading
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signal handlers need the main thread')
  full, late = tmp_path / 'full', tmp_path / 'late'
  experiment.train_and_evaluate(small(), full, progress=False)
  real_wait, calls = ckpt_lib.Checkpoints.wait, []

  def wait_after_sigterm(self):
    if not calls:
      os.kill(os.getpid(), signal.SIGTERM)   # recorded by the loop's handler
    calls.append(1)
    real_wait(self)
  monkeypatch.setattr(ckpt_lib.Checkpoints, 'wait', wait_after_sigterm)
  with pytest.raises(loop.Interrupted, match='SIGTERM at step 40'):
    experiment.train_and_evaluate(small(), late, progress=False)
  assert calls and ckpt_lib.Checkpoints(late / 'checkpoints').latest_step() == 40
  assert not (late / 'summary.json').exists()
  summary = experiment.train_and_evaluate(small(), late, progress=False)
  assert summary['resumed_from'] == 40 and summary['final_step'] == 40
  assert_same_state(final_state(full), final_state(late))


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  # The learning rate warms up to an absurd value: training blows up after a few steps.
  c = small('mnist1d_mlp.py', **{'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e12,
                                 'optimizer.warmup_steps': 30, 'train.checkpoint_every': 2,
                                 'train.log_every': 1})
  with pytest.raises(loop.NonFiniteError, match='non-finite at step') as err:
    experiment.train_and_evaluate(c, tmp_path, progress=False)
  ckpts = ckpt_lib.Checkpoints(tmp_path / 'checkpoints')
  last = ckpts.latest_step()
  assert last is not None and f'step {last}' in str(err.value)
  state = final_state(tmp_path)
  for leaf in jax.tree.leaves(state['params']):
    assert np.all(np.isfinite(np.asarray(leaf)))
  rows = metrics_lib.read_rows(tmp_path / 'metrics.jsonl')
  assert all(np.isfinite(r['loss']) for r in rows if r['kind'] == 'train')


def test_corrupt_checkpoint_is_reported(tmp_path):
  c = small(**{'train.steps': 20})
  experiment.train_and_evaluate(c, tmp_path, progress=False)
  step_dir = tmp_path / 'checkpoints' / 'steps' / '20' / 'state'
  for f in step_dir.rglob('*'):
    if f.is_file() and f.stat().st_size > 0 and 'manifest' in f.name:
      f.write_bytes(b'garbage')
  with pytest.raises(ckpt_lib.CheckpointError, match=r'steps/20.*could not be restored'):
    experiment.train_and_evaluate(c, tmp_path, progress=False)


def test_partial_save_is_reported_and_removed(tmp_path):
  c = small(**{'train.steps': 20})
  experiment.train_and_evaluate(c, tmp_path, progress=False)
  leftover = tmp_path / 'checkpoints' / 'steps' / '30.orbax-checkpoint-tmp-123'
  leftover.mkdir()
  with pytest.warns(UserWarning, match='never finished'):
    summary = experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert not leftover.exists() and summary['resumed_from'] == 20


def test_other_config_in_same_workdir_is_an_error(tmp_path):
  experiment.train_and_evaluate(small(**{'train.steps': 20}), tmp_path, progress=False)
  with pytest.raises(config_lib.ConfigError, match="config.sparsity"):
    experiment.train_and_evaluate(small(**{'train.steps': 20, 'sparsity': 0.5}), tmp_path,
                            progress=False)


def _write_npz(path, n_train=96, n_test=40, shape=(8, 8)):
  rng = np.random.default_rng(0)
  y_tr, y_te = rng.integers(0, 4, n_train), rng.integers(0, 4, n_test)
  proto = rng.standard_normal((4, *shape)).astype(np.float32)
  np.savez(path, x_train=proto[y_tr] + 0.1 * rng.standard_normal((n_train, *shape)),
           y_train=y_tr, x_test=proto[y_te], y_test=y_te)


def test_npz_and_idx_data_train(tmp_path):
  _write_npz(tmp_path / 'd.npz')
  c = small('mnist1d_mlp.py', **{'data.name': 'npz', 'data.options.path': str(tmp_path / 'd.npz'),
                                 'data.batch_size': 16, 'data.eval_batch_size': 16,
                                 'optimizer.learning_rate': 1e-2})
  summary = experiment.train_and_evaluate(c, tmp_path / 'run_npz', progress=False)
  assert summary['eval']['test']['examples'] == 40
  assert summary['eval']['test']['accuracy'] > 0.5    # 4 well-separated classes
  # IDX: the MNIST file format, written here.
  import gzip
  idx = tmp_path / 'idx'
  idx.mkdir()
  rng = np.random.default_rng(1)
  for prefix, n in (('train', 60), ('t10k', 20)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    head_i = np.array([0x803, n, 28, 28], '>u4').tobytes()
    head_l = np.array([0x801, n], '>u4').tobytes()
    with gzip.open(idx / f'{prefix}-images-idx3-ubyte.gz', 'wb') as f:
      f.write(head_i + images.tobytes())
    (idx / f'{prefix}-labels-idx1-ubyte').write_bytes(head_l + labels.tobytes())
  c = small('lenet300_100_mnist.py', **{'data.name': 'idx', 'data.options': {'path': str(idx)},
                                        'data.batch_size': 20, 'data.eval_batch_size': 10,
                                        'train.eval_splits': ('test',), 'train.steps': 6,
                                        'model.options': {}})
  summary = experiment.train_and_evaluate(c, tmp_path / 'run_idx', progress=False)
  assert summary['eval']['test']['examples'] == 20


def test_tfds_mock_data_trains(tmp_path, tfds_mock):
  c = small('conv4_cifar10.py', **{'data.batch_size': 8, 'data.eval_batch_size': 8,
                                   'model.options': {'width': 0.125}, 'train.steps': 2,
                                   'train.eval_every': 2, 'train.checkpoint_every': 2})
  with tfds_mock(16):
    summary = experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert summary['eval']['test']['examples'] == 16
  assert np.isfinite(summary['eval']['test']['loss'])


CONFIG_FILES = sorted(p.name for p in CONFIGS.glob('*.py'))


# gpt2_small_text (31 s even at its tiny size) and the SmolLM2 configs (its
# tokenizer over the corpus) run with the extended checks, and so do the four
# slowest of the rest (14-37 s each in CI; their models and data run in other
# default tests: test_models, test_bert, test_data)
EXTENDED_CONFIGS = ('gpt2_small_text.py', 'smollm2_kjv.py', 'smollm2_sft.py',
                    'resnet20_cifar10_rigl.py', 'transformer_lm_text.py',
                    'transformer_mnist1d.py', 'minilm_stdlib_topics.py')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.extended)
                                  if n in EXTENDED_CONFIGS else n for n in CONFIG_FILES])
def test_every_config_runs_two_steps(name, tmp_path, tfds_mock):
  # GPT-2 small's shape (163M params) takes minutes to compile on CPU: its
  # tiny size is the same program (bf16, remat, FSDP, packed masks, RigL)
  c = config_lib.load_config(CONFIGS / (name + ':tiny' if name == 'gpt2_small_text.py'
                                        else name))
  over = {'train.steps': 2, 'train.log_every': 1, 'train.eval_every': 2,
          'train.checkpoint_every': 2, 'data.batch_size': 8, 'data.eval_batch_size': 8,
          'train.eval_splits': ('test',)}
  if c.pruning.schedule in ('oneshot',):
    over['pruning.at_step'] = 1
  if c.pruning.schedule in ('gradual', 'rigl', 'set'):
    over.update({'pruning.start': 0, 'pruning.end': 2 if c.pruning.schedule != 'gradual' else 1,
                 'pruning.every': 1})
  expected = 1 - c.sparsity
  if c.pruning.schedule == 'imp':      # one round at step 1
    over.update({'pruning.every': 1, 'pruning.rounds': 1})
    expected = 1 - c.pruning.prune_fraction
  if c.model.name == 'bert':    # a tiny BERT: this checks the plumbing, not MiniLM
    over['model.options'] = {'hidden': 32, 'num_layers': 1, 'num_heads': 2,
                             'intermediate': 64}
  if c.model.name == 'llama':   # SmolLM2's tokenizer and options, a tiny random body
    over['model.options'] = {**{k: v for k, v in c.model.options.items() if k != 'pretrained'},
                             'vocab_size': 49152, 'hidden': 32, 'num_layers': 1,
                             'num_heads': 2, 'num_kv_heads': 1, 'intermediate': 64}
  if c.data.name == 'corpus':
    over['data.options'] = {**c.data.options, 'seqlen': 16, 'train_windows': 8,
                            'test_windows': 2}
  if c.data.name == 'kjv_books':   # a few verses a book: the plumbing, not the task
    over['data.options'] = {**c.data.options, 'train_per_book': 2, 'validation_per_book': 1,
                            'test_per_book': 1}
  if c.model.name in ('conv2', 'conv4', 'conv6', 'resnet20'):
    over['model.options'] = ({'width': 0.125} if c.model.name.startswith('conv')
                             else {'width': 4, 'blocks_per_stage': 1})
  c = config_lib.apply_overrides(c, over)
  with tfds_mock(16):
    summary = experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert np.isfinite(summary['eval']['test']['loss'])
  assert summary['density'] == pytest.approx(expected, abs=0.02) or c.pruning.pattern == 'nm'
  recorded = json.loads((tmp_path / 'summary.json').read_text())
  assert recorded['steps'] == 2
  memory = recorded['memory']    # measured: the process's peak RSS; a device peak off CPU
  assert memory['peak_rss_mib'] > 50
  assert (memory['peak_device_bytes'] is None) == (jax.default_backend() == 'cpu')
