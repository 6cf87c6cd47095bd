"""Teacher-guided retraining (sparsejax.train.distill): the KL and hidden-state
terms against numpy, a teacher equal to the student changes nothing, a
fixed-mask fine-tuning run with distillation (exact zeros, falling loss,
bitwise resume, a different teacher refused), the config path from a
`sparsejax prune` workdir, and config errors that name the key."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import config as config_lib, experiment, prune_run
from sparsejax.core import tree as tree_lib
from sparsejax.data import ArraySource, Dataset
from sparsejax.models.mlp import MLP
from sparsejax.models.transformer import TransformerEncoder
from sparsejax.programs import finetune
from sparsejax.train import distill as distill_lib, loop, metrics as metrics_lib
from sparsejax.train import weights as weights_lib
from sparsejax.train.task import LoopSettings, Task


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_kd_loss_two_classes_against_numpy():
  student = np.array([[2.0, -1.0], [0.3, 0.1], [-4.0, 5.0]])
  teacher = np.array([[0.5, 0.2], [0.3, 0.1], [3.0, -2.0]])
  for t in (1.0, 2.0, 4.0):
    p, q = softmax(teacher / t), softmax(student / t)
    want = t * t * np.sum(p * np.log(p / q), axis=-1)
    got = distill_lib.kd_loss(jnp.asarray(student), jnp.asarray(teacher), t)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got[1] == pytest.approx(0.0, abs=1e-7)     # same logits: no divergence
  # The T^2 factor keeps the gradient at T (q - p) (Hinton et al. 2015, Sec. 2).
  grad = jax.jit(jax.grad(lambda z: distill_lib.kd_loss(z, jnp.asarray(teacher), t).sum()))(
      jnp.asarray(student))
  np.testing.assert_allclose(grad, t * (q - p), rtol=1e-4, atol=1e-6)


def test_hidden_mse_hand_case():
  student = {'block_0': {'__call__': (jnp.array([[1.0, 2.0]]),)},
             'block_1': {'__call__': (jnp.array([3.0]),)}}
  teacher = {'block_0': {'__call__': (jnp.array([[0.0, 0.0]]),)},
             'block_1': {'__call__': (jnp.array([1.0]),)}}
  # ((1 + 4) / 2 + 4) / 2: the mean over modules of each module's mean error.
  assert float(distill_lib.hidden_mse(student, teacher)) == pytest.approx(3.25)


def dataset(n=512, seed=0):
  x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
  y = ((x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0)).astype(np.int32)
  cut = n * 3 // 4
  return Dataset('quadrants', ArraySource(x[:cut], y[:cut]), ArraySource(x[cut:], y[cut:]),
                 None, num_classes=4, input_shape=(8,), input_dtype=np.float32)


DATA = dataset()
MODEL = MLP(features=(32, 32), num_classes=4)


def test_identical_teacher_adds_nothing_and_gets_no_gradient():
  params = MODEL.init(jax.random.key(0), jnp.zeros((1, 8)))['params']
  batch = (jnp.asarray(DATA.train.x[:64]), jnp.asarray(DATA.train.y[:64]))
  plain = Task(dataset=DATA, model=MODEL, optimizer=optax.sgd(0.1))
  kd = plain.replace(distill=distill_lib.Distill(kd_weight=1.0, task_weight=1.0,
                                                 temperature=2.0))
  teacher = {'params': params, 'model_state': {}}
  key = jax.random.key(1)
  (l0, (m0, _)), g0 = jax.jit(jax.value_and_grad(plain.train_loss, has_aux=True))(
      params, {}, batch, key)
  (l1, (m1, _)), g1 = jax.jit(jax.value_and_grad(kd.train_loss, has_aux=True))(
      params, {}, batch, key, teacher=teacher)
  assert float(m1['kd_loss']) == pytest.approx(0.0, abs=1e-7)
  assert float(l1) == pytest.approx(float(l0), abs=1e-6)
  assert float(m1['task_loss']) == pytest.approx(float(l0), abs=1e-6)
  assert float(m1['accuracy']) == float(m0['accuracy'])
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # No gradient reaches the teacher (stop_gradient), even when it differs.
  other = jax.tree.map(lambda p: p * 1.5, params)
  g_teacher = jax.jit(jax.grad(lambda t: kd.train_loss(params, {}, batch, key, teacher=t)[0]))(
      {'params': other, 'model_state': {}})
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_teacher))


def test_hidden_states_of_transformer_blocks():
  model = TransformerEncoder(max_len=8, d_model=16, num_heads=2, num_layers=2, mlp_dim=16,
                             num_classes=3)
  x = jax.random.normal(jax.random.key(0), (4, 8))
  y = jnp.array([0, 1, 2, 0])
  ds = Dataset('seq', ArraySource(np.zeros((4, 8), np.float32), np.zeros(4, np.int32)), None,
               None, num_classes=3, input_shape=(8,), input_dtype=np.float32)
  init = jax.jit(model.init)
  params, other = (init(jax.random.key(k), x)['params'] for k in (1, 2))
  task = Task(dataset=ds, model=model, optimizer=optax.sgd(0.1), loop=LoopSettings(eval_splits=()),
              distill=distill_lib.Distill(kd_weight=0.0, hidden_weight=1.0))
  blocks = jax.jit(lambda p: task.apply_capturing(
      p, {}, x, capture=distill_lib.module_filter(distill_lib.BLOCKS))[2])
  hidden = blocks(params)
  assert sorted(hidden) == ['block_0', 'block_1']      # the blocks' outputs, nothing else
  loss_fn = jax.jit(lambda t: task.train_loss(params, {}, (x, y), None,
                                              teacher={'params': t, 'model_state': {}}))
  same = loss_fn(params)
  # zero up to rounding: the student's and the teacher's forward passes are
  # two copies in one program, which XLA may fuse differently (6.9e-14 here
  # under the test suite's loop emitters; 0.0 under the default ones)
  assert abs(float(same[1][0]['hidden_loss'])) < 1e-12 and 'kd_loss' not in same[1][0]
  loss, (metrics, _) = loss_fn(other)
  hidden_other = blocks(other)
  want = np.mean([np.mean((np.asarray(hidden[b]['__call__'][0]) - np.asarray(
      hidden_other[b]['__call__'][0])) ** 2) for b in ('block_0', 'block_1')])
  assert float(metrics['hidden_loss']) == pytest.approx(want, rel=1e-5)
  assert float(loss) == pytest.approx(float(metrics['task_loss'] + want), rel=1e-5)
  # A pattern that matches nothing is a setup error naming the setting and the modules.
  bad = task.replace(distill=task.distill.replace(hidden_modules='^nothing$'))
  with pytest.raises(loop.SetupError, match=r"distill.hidden_modules.*'block_0/mlp/fc_in'"):
    loop.build(bad, start=loop.Start(params))


@pytest.fixture(scope='module')
def fine_tuned(tmp_path_factory):
  """A dense teacher trained in plain Python, pruned to 80% and fine-tuned for
  30 steps with the mask fixed and distillation from the dense weights."""
  params = MODEL.init(jax.random.key(0), jnp.zeros((1, 8)))['params']
  loss_fn = lambda p, b: optax.softmax_cross_entropy_with_integer_labels(
      MODEL.apply({'params': p}, b[0]), b[1]).mean()
  batches = [DATA.train.get(np.arange(i * 64, (i + 1) * 64) % len(DATA.train))
             for i in range(6)]
  dense = finetune.fine_tune(params, sj.dense_masks(params), loss_fn, batches * 25,
                             optax.adam(1e-2))
  pruned, masks = sj.prune(dense, 0.8, 'magnitude')
  task = Task(dataset=DATA, model=MODEL, optimizer=optax.adam(3e-3), batch_size=32,
              loop=LoopSettings(steps=30, log_every=1, eval_every=30, checkpoint_every=10),
              schedule=sj.FixedMask(masks=jax.device_get(masks)),
              distill=distill_lib.Distill(teacher=dense, temperature=2.0, kd_weight=1.0))
  workdir = tmp_path_factory.mktemp('distill') / 'full'
  start = loop.Start(jax.device_get(pruned))
  result = loop.train(task, workdir, start=start, progress=False)
  return task, start, dense, masks, workdir, jax.device_get(result.state.params)


def test_fine_tuning_with_distillation_keeps_zeros_and_lowers_loss(fine_tuned):
  _, _, dense, masks, workdir, params = fine_tuned
  flat = dict(tree_lib.leaves_with_paths(params))
  for path, m in tree_lib.leaves_with_paths(masks):
    assert np.all(flat[path][~np.asarray(m)] == 0.0), path
  rows = [r for r in metrics_lib.read_rows(workdir / 'metrics.jsonl')
          if r['kind'] == 'train' and 'kd_loss' in r]
  assert len(rows) == 30
  first, last = rows[:5], rows[-5:]
  for key in ('loss', 'kd_loss'):
    assert np.mean([r[key] for r in last]) < np.mean([r[key] for r in first]), key
  for r in rows:     # the logged loss is the weighted objective
    assert r['loss'] == pytest.approx(r['task_loss'] + r['kd_loss'], rel=1e-5)
  record = json.loads((workdir / 'config.json').read_text())
  assert record['resolved']['distill'] == {
      'temperature': 2.0, 'kd_weight': 1.0, 'task_weight': 1.0, 'hidden_weight': 0.0,
      'teacher': distill_lib.fingerprint({'params': dense, 'model_state': {}})}


def test_distillation_resumes_bitwise_and_refuses_another_teacher(fine_tuned, tmp_path):
  task, start, dense, _, workdir, params = fine_tuned
  part = tmp_path / 'part'
  shutil.copytree(workdir, part)
  for p in (part / 'checkpoints' / 'steps').iterdir():
    if int(p.name) > 10:
      shutil.rmtree(p)
  result = loop.train(task, part, start=start, progress=False)   # the teacher is rebuilt
  assert result.summary['resumed_from'] == 10
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(jax.device_get(result.state.params))):
    np.testing.assert_array_equal(a, b)
  other = task.replace(distill=task.distill.replace(
      teacher=jax.tree.map(lambda x: x * 0.5, dense)))
  with pytest.raises(loop.SetupError, match=r'distill\.teacher'):
    loop.train(other, part, start=start, progress=False)


def test_teacher_from_start_needs_dense_start_weights():
  params = MODEL.init(jax.random.key(0), jnp.zeros((1, 8)))['params']
  task = Task(dataset=DATA, model=MODEL, optimizer=optax.sgd(0.1),
              distill=distill_lib.Distill())
  with pytest.raises(loop.SetupError, match='fresh initialisation'):
    loop.build(task)
  with pytest.raises(loop.SetupError, match='already pruned'):   # the mask from its zeros
    loop.build(task.replace(schedule=sj.FixedMask()), start=loop.Start(params))
  run = loop.build(task, start=loop.Start(params))
  assert run.teacher['params'] is params and not run.warnings


CONFIG = '''
from sparsejax.config import default_config

def get_config():
  c = default_config()
  c.data.name = 'npz'
  c.data.options = {{'path': {path!r}}}
  c.data.batch_size = 16
  c.data.eval_batch_size = 32
  c.model.name = 'transformer_encoder'
  c.model.options = {{'d_model': 16, 'num_heads': 2, 'num_layers': 2, 'mlp_dim': 16,
                     'max_len': 16}}
  c.pruning.include = r'block_\\d+/(attention|mlp)/.*kernel'
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 6
  c.train.log_every = 1
  c.train.eval_every = 6
  c.train.checkpoint_every = 6
  return c
'''


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A config for a tiny Transformer on random npz data, trained weights, and
  a `sparsejax prune` workdir pruned from them."""
  root = tmp_path_factory.mktemp('tiny')
  rng = np.random.default_rng(0)
  np.savez(root / 'data.npz', x_train=rng.normal(size=(64, 16)).astype(np.float32),
           y_train=rng.integers(0, 3, 64), x_test=rng.normal(size=(32, 16)).astype(np.float32),
           y_test=rng.integers(0, 3, 32))
  (root / 'config.py').write_text(CONFIG.format(path=str(root / 'data.npz')))
  model = TransformerEncoder(max_len=16, d_model=16, num_heads=2, num_layers=2, mlp_dim=16,
                             num_classes=3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16)))['params']
  weights_lib.write_npz(root / 'trained.npz', params)
  config = config_lib.load_config(root / 'config.py')
  prune_run.run_prune(config, root / 'pruned', method='magnitude', nm='2:4',
                       calibration=16, init_from=str(root / 'trained.npz'), evaluate=False,
                       log=lambda *a: None)
  return root, config, params


def test_prune_workdir_then_fixed_mask_distillation_from_config(tiny, tmp_path):
  root, config, params = tiny
  c = config_lib.apply_overrides(config, {
      'finetune.init_from': str(root / 'pruned'), 'pruning.schedule': 'fixed',
      'distill.teacher': 'start', 'distill.hidden_weight': 0.5})
  row = experiment.run_finetune(c, tmp_path)
  assert row['density'] == pytest.approx(0.5)
  record = json.loads((tmp_path / 'config.json').read_text())
  # 'start' of a prune workdir is the dense weights it was pruned from.
  assert record['resolved']['distill']['teacher'] == distill_lib.fingerprint(
      {'params': jax.device_get(params), 'model_state': {}})
  assert record['resolved']['distill']['hidden_modules'] == distill_lib.BLOCKS
  rows = [r for r in metrics_lib.read_rows(tmp_path / 'metrics.jsonl')
          if r['kind'] == 'train' and 'kd_loss' in r]
  assert len(rows) == 6 and all(r['hidden_loss'] >= 0 for r in rows)
  assert rows[0]['kd_loss'] > 0          # the pruned student differs from its teacher
  _, masks = prune_run.load_pruned(root / 'pruned')
  final, _, _ = weights_lib.final_weights(tmp_path)
  flat = dict(tree_lib.leaves_with_paths(final))
  for path, m in tree_lib.leaves_with_paths(masks):
    assert np.all(np.asarray(flat[path])[~np.asarray(m)] == 0.0), path


@pytest.mark.parametrize('over,match', [
    ({'distill.kd_weight': 0.5}, r"'distill\.kd_weight' is set but distillation is off"),
    ({'distill.teacher': 'start', 'distill.hidden_modules': 'block'},
     r"'distill\.hidden_modules' is set but the hidden-state term is off"),
    ({'distill.teacher': 'start', 'distill.temperature': 0.0}, r"'distill\.temperature'"),
    ({'distill.teacher': 'start', 'distill.kd_weight': -1.0}, r"'distill\.kd_weight'"),
    ({'distill.teacher': 'start', 'distill.kd_weight': 0.0}, r"'distill\.kd_weight'.*nothing"),
    ({'distill.teacher': 'start'}, r"'distill\.teacher'='start'.*fresh initialisation"),
    ({'distill.teacher': '/no/such/teacher.npz'}, r"'distill\.teacher'.*does not exist"),
    ({'distill.teacher': 'start', 'finetune.init_from': 'TRAINED',
      'pruning.schedule': 'fixed'}, r"'distill\.teacher'='start'.*pruned already"),
    ({'distill.teacher': 'start', 'lottery.levels': 1}, r"'distill\.teacher'.*lottery"),
    ({'distill.tempreature': 2.0}, r"'distill\.tempreature' \(did you mean 'temperature'"),
], ids=['off', 'hidden_modules', 'temperature', 'negative', 'nothing', 'train_start',
        'missing', 'fixed_from_zeros', 'lottery', 'typo'])
def test_config_errors_name_the_key(tiny, tmp_path, over, match):
  root, config, _ = tiny
  over = {k: (str(root / 'trained.npz') if v == 'TRAINED' else v) for k, v in over.items()}
  with pytest.raises(config_lib.ConfigError, match=match):
    c = config_lib.apply_overrides(config, over)
    if 'lottery.levels' in over:
      experiment.run_lottery(c, tmp_path)
    elif 'finetune.init_from' in over:
      experiment.run_finetune(c, tmp_path)
    else:
      experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert not any(tmp_path.iterdir())        # nothing was written
