"""A user's own package, used the way a user does: written to a folder on the
import path (outside sparsejax), named in a config by import paths (a Linen
model, an NNX model class, a data function and a loss as strings), then run
through the command line: train -> lottery with the `reinit` and
`random_prune` controls -> finetune -> export with its verification -> eval.

Asserts what a user relies on: pruned weights exactly 0.0, exact densities,
a `reinit` control that starts from weights other than the ticket's, and an
export whose outputs equal the masked dense model's within 1e-5."""

import json
import sys
import textwrap

import numpy as np
import pytest

import sparsejax as sj
from sparsejax import cli
from sparsejax.programs import results
from sparsejax.core import tree as tree_lib

PACKAGE = 'sj_userpkg'

FILES = {
    '__init__.py': '',
    'models.py': '''
        import flax.linen as nn
        from flax import nnx


        class LinenNet(nn.Module):
          """No `train` argument, its own layer names."""
          num_classes: int = 4
          width: int = 16

          @nn.compact
          def __call__(self, x):
            x = nn.relu(nn.Dense(self.width, name='inp')(x))
            return nn.Dense(self.num_classes, name='out')(x)


        class NNXNet(nnx.Module):
          """An NNX class: a 1-D convolution, then two linear layers."""

          def __init__(self, rngs, num_classes=4, width=16):
            self.conv = nnx.Conv(1, 4, (3,), rngs=rngs)
            self.inp = nnx.Linear(8 * 4, width, rngs=rngs)
            self.out = nnx.Linear(width, num_classes, rngs=rngs)

          def __call__(self, x):
            x = nnx.relu(self.conv(x[..., None]))
            return self.out(nnx.relu(self.inp(x.reshape(x.shape[0], -1))))
        ''',
    'data.py': '''
        import numpy as np
        from sparsejax.data import ArraySource, Dataset


        def blobs(n=320, seed=0):
          """4 Gaussian blobs in 8 dimensions."""
          rng = np.random.default_rng(seed)
          y = rng.integers(0, 4, n).astype(np.int32)
          centers = rng.normal(size=(4, 8)).astype(np.float32) * 3
          x = centers[y] + rng.normal(size=(n, 8)).astype(np.float32)
          cut = n * 3 // 4
          return Dataset('blobs', ArraySource(x[:cut], y[:cut]), ArraySource(x[cut:], y[cut:]),
                         None, num_classes=4, input_shape=(8,), input_dtype=np.float32)
        ''',
    'losses.py': '''
        import jax
        import optax


        def smoothed(outputs, labels, smoothing=0.1):
          """Label-smoothed cross-entropy, per example."""
          targets = optax.smooth_labels(jax.nn.one_hot(labels, outputs.shape[-1]), smoothing)
          return optax.softmax_cross_entropy(outputs, targets)
        ''',
    'config.py': '''
        import sparsejax.config


        def get_config(model='LinenNet'):
          c = sparsejax.config.default_config()
          c.model.name = f'sj_userpkg.models:{model}'
          c.model.options = {'width': 16}
          c.data.name = 'sj_userpkg.data:blobs'
          c.data.batch_size = 32
          c.data.eval_batch_size = 80
          c.loss.name = 'sj_userpkg.losses:smoothed'
          c.loss.options = {'smoothing': 0.05}
          c.optimizer.name = 'adam'
          c.optimizer.learning_rate = 1e-2
          c.train.steps = 30
          c.train.log_every = 10
          c.train.eval_every = 30
          c.train.checkpoint_every = 30
          c.lottery.levels = 1
          c.lottery.prune_fraction = 0.5
          c.lottery.controls = ('reinit', 'random_prune')
          return c
        ''',
}


@pytest.fixture(scope='module')
def package(tmp_path_factory):
  root = tmp_path_factory.mktemp('user_code')
  (root / PACKAGE).mkdir()
  for name, text in FILES.items():
    (root / PACKAGE / name).write_text(textwrap.dedent(text).lstrip())
  sys.path.insert(0, str(root))
  yield root
  sys.path.remove(str(root))
  for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + '.')]:
    del sys.modules[name]


def exact_zeros(workdir):
  """Every masked weight of the run's final checkpoint is exactly 0.0; returns
  {leaf path: (kept weights, shape)} of the masked leaves."""
  params, _, masks = results.final_weights(workdir)
  flat = dict(tree_lib.leaves_with_paths(params))
  counts = {}
  for path, m in tree_lib.leaves_with_paths(masks):
    if m is None:
      continue
    m = np.asarray(m)
    assert np.all(np.asarray(flat[path])[~m] == 0.0), path
    counts[path] = (int(m.sum()), m.shape)
  assert counts
  return counts


def keeps_exactly(counts, sparsity_of):
  """Each leaf keeps n - round(s * n) weights at its sparsity s."""
  for path, (kept, shape) in counts.items():
    n = int(np.prod(shape))
    assert kept == n - round(sparsity_of(path) * n), (path, kept, n)


@pytest.mark.parametrize('model, programs', [
    ('NNXNet', 'all'),
    ('LinenNet', 'train'),     # its lottery and fine-tuning are test_own's (from Python)
])
def test_own_package_through_the_command_line(package, tmp_path, capsys, model, programs):
  config = f'{package / PACKAGE / "config.py"}:{model}'
  run = tmp_path / 'train'
  # train, sparse with RigL at 75%
  assert cli.main(['train', '--config', config, '--workdir', str(run), '--no-progress',
                   '--config.pruning.schedule=rigl', '--config.sparsity=0.75',
                   '--config.pruning.every=10', '--config.pruning.end=0.75']) == 0
  counts = exact_zeros(run)
  per_layer = sj.make_schedule('rigl', sparsity=0.75).allocation.layer_sparsities(
      {p: shape for p, (_, shape) in counts.items()}, 0.75)
  keeps_exactly(counts, per_layer.get)
  kept = sum(k for k, _ in counts.values())
  total = sum(int(np.prod(shape)) for _, shape in counts.values())
  assert json.loads((run / 'summary.json').read_text())['density'] == pytest.approx(
      kept / total, abs=1e-6)

  if programs == 'train':
    return export_and_eval(run, capsys)

  # the lottery: level 1 keeps exactly half of each layer; reinit starts from other weights
  assert cli.main(['lottery', '--config', config, '--workdir', str(tmp_path / 'lottery')]) == 0
  level_1 = next((tmp_path / 'lottery').glob('lottery_*/replicate_0/level_1'))
  densities = {}
  for arm in ('ticket', 'reinit', 'random_prune'):
    densities[arm] = exact_zeros(level_1 / arm)
  assert densities['ticket'] == densities['reinit'] == densities['random_prune']
  keeps_exactly(densities['ticket'], lambda path: 0.5)
  ticket, _ = results.named_weights(level_1 / 'ticket', 'init')
  reinit, _ = results.named_weights(level_1 / 'reinit', 'init')
  for (path, t), (_, r) in zip(tree_lib.leaves_with_paths(ticket),
                               tree_lib.leaves_with_paths(reinit)):
    if np.asarray(t).ndim >= 2:
      assert not np.array_equal(np.asarray(t), np.asarray(r)), path

  # fine-tune the dense level-0 run after one-shot pruning to 80%
  dense = next((tmp_path / 'lottery').glob('lottery_*/replicate_0/level_0/ticket'))
  ft = tmp_path / 'finetune'
  assert cli.main(['finetune', '--config', config, '--workdir', str(ft), '--no-progress',
                   f'--config.finetune.init_from={dense}', '--config.pruning.schedule=oneshot',
                   '--config.sparsity=0.8', '--config.train.steps=20',
                   '--config.train.eval_every=20', '--config.train.checkpoint_every=20']) == 0
  keeps_exactly(exact_zeros(ft), lambda path: 0.8)

  export_and_eval(ft, capsys)


def export_and_eval(workdir, capsys):
  """Export with its verification (within 1e-5), then evaluate the same run."""
  capsys.readouterr()
  assert cli.main(['export', str(workdir), '--format', 'csr']) == 0
  out = capsys.readouterr().out
  diff = float(out.split('max |output - masked dense output|')[1].split(':')[1].split()[0])
  assert diff <= 1e-5, out
  assert 'sparse products not exercised' not in out
  per_example = workdir.parent / f'{workdir.name}_per_example.npz'
  assert cli.main(['eval', '--workdir', str(workdir), '--split', 'test',
                   '--per-example', str(per_example)]) == 0
  assert 'accuracy' in capsys.readouterr().out
  # one loss and one 0/1 accuracy per test example, whose means are the
  # run's own final test evaluation (its last checkpoint is its last step)
  final = json.loads((workdir / 'summary.json').read_text())['eval']['test']
  with np.load(per_example) as f:
    loss, accuracy = f['test_loss'], f['test_accuracy']
  assert loss.shape == accuracy.shape == (final['examples'],)
  assert set(np.unique(accuracy)) <= {0.0, 1.0}
  assert float(accuracy.mean()) == pytest.approx(final['accuracy'], abs=1e-6)
  assert float(loss.mean()) == pytest.approx(final['loss'], rel=1e-5)
