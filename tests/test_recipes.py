"""The papers' training recipes as config: step (milestone) learning-rate
decay, epochs as a unit, label smoothing, augmentation on the device that
resumes bitwise, and evaluation of the best-validation weights."""

import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import config as config_lib, experiment, optim
from sparsejax.data import ArraySource, Dataset, augment, steps_per_epoch
from sparsejax.train import checkpoint as ckpt_lib, inspection, loop, task as task_lib
from sparsejax.train.task import LoopSettings, Task


def test_milestone_schedule_at_its_boundaries():
  lr = optim.learning_rate_fn({'learning_rate': 0.1, 'schedule': 'step',
                               'milestones': (100, 250), 'gamma': 0.1}, 400)
  values = [float(lr(t)) for t in (0, 99, 100, 249, 250, 399)]
  np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
  every = optim.learning_rate_fn({'learning_rate': 0.1, 'schedule': 'step',
                                  'decay_every': 25_000}, 100_000)     # SNIP's LeNet recipe
  np.testing.assert_allclose([float(every(t)) for t in (24_999, 25_000, 50_000, 75_000)],
                             [0.1, 0.01, 0.001, 0.0001], rtol=1e-5)
  warm = optim.learning_rate_fn({'learning_rate': 0.1, 'schedule': 'step', 'milestones': (20,),
                                 'warmup_steps': 10}, 40)
  np.testing.assert_allclose([float(warm(t)) for t in (0, 5, 10, 19, 20)],
                             [0.0, 0.05, 0.1, 0.1, 0.01], rtol=1e-6)
  with pytest.raises(optim.OptimizerError, match='milestones or decay_every'):
    optim.resolve_spec({'schedule': 'step'})


def test_epochs_become_steps():
  assert steps_per_epoch(55_000, 100) == 550 and steps_per_epoch(4000, 128) == 31
  spec = optim.in_steps({'unit': 'epochs', 'schedule': 'step', 'milestones': (30, 60),
                         'warmup_steps': 1}, 550)
  assert spec['milestones'] == (16_500, 33_000) and spec['warmup_steps'] == 550
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'train.epochs': 3, 'data.batch_size': 128, 'optimizer.schedule': 'step',
      'optimizer.milestones': (2,), 'optimizer.unit': 'epochs'})
  task = experiment.build_task(c)             # MNIST-1D: 4000 training examples
  assert task.loop.steps == 3 * 31            # full batches: the last partial one is dropped
  assert float(task.loop.learning_rate(61)) == pytest.approx(1e-3)
  assert float(task.loop.learning_rate(62)) == pytest.approx(1e-4)
  with pytest.raises(config_lib.ConfigError, match='both set'):
    experiment.build_task(config_lib.apply_overrides(c, {'train.steps': 50}))


def test_label_smoothing_hand_case():
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([0])
  # targets (1 - 0.2) one-hot + 0.2 / 4 = [0.85, 0.05, 0.05, 0.05]
  logp = jax.nn.log_softmax(logits)[0]
  want = -(0.85 * logp[0] + 0.05 * (logp[1] + logp[2] + logp[3]))
  got = task_lib.softmax_cross_entropy(logits, labels, label_smoothing=0.2)
  assert float(got[0]) == pytest.approx(float(want), rel=1e-6)
  assert float(task_lib.softmax_cross_entropy(logits, labels)[0]) == pytest.approx(
      float(-logp[0]), rel=1e-6)
  loss = experiment.build_loss('', {'label_smoothing': 0.2})
  assert float(loss(logits, labels)[0]) == pytest.approx(float(want), rel=1e-6)
  with pytest.raises(config_lib.ConfigError, match='loss.options.smoothing'):
    experiment.build_loss('', {'smoothing': 0.2})


def test_augmentation_is_a_function_of_the_key():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1) + 1
  fn = augment.make_augment(crop_padding=1, flip=True)
  a, b = fn(x, jax.random.key(3)), fn(x, jax.random.key(3))
  assert np.array_equal(np.asarray(a), np.asarray(b))
  assert a.shape == x.shape
  outs = {np.asarray(fn(x, jax.random.key(k))).tobytes() for k in range(8)}
  assert len(outs) > 1
  crop = augment.random_crop(x, jax.random.key(0), 1)
  for img, src in zip(np.asarray(crop), np.asarray(x)):   # every crop is a window of the padded image
    padded = np.pad(src, ((1, 1), (1, 1), (0, 0)))
    assert any(np.array_equal(img, padded[i:i + 4, j:j + 4]) for i in range(3) for j in range(3))
  flipped = augment.random_flip(x, jax.random.key(1))
  for img, src in zip(np.asarray(flipped), np.asarray(x)):
    assert np.array_equal(img, src) or np.array_equal(img, src[:, ::-1])
  assert augment.make_augment() is None


class Flat(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1))))


def image_task(**changes):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(96, 6, 6, 1)).astype(np.float32)
  y = (x[:, :3].mean((1, 2, 3)) > 0).astype(np.int32) + (x[:, :, :3].mean((1, 2, 3)) > 0)
  ds = Dataset('images', ArraySource(x[:64], y[:64]), ArraySource(x[64:80], y[64:80]),
               ArraySource(x[80:], y[80:]), num_classes=3, input_shape=(6, 6, 1),
               input_dtype=np.float32)
  base = dict(dataset=ds, optimizer=optax.sgd(0.1, momentum=0.9), model=Flat(),
              batch_size=16, eval_batch_size=16,
              loop=LoopSettings(steps=20, checkpoint_every=10, eval_every=10,
                                eval_splits=('validation', 'test')),
              augment=augment.make_augment(crop_padding=1, flip=True))
  return Task(**{**base, **changes})


def test_augmented_run_resumes_bitwise_and_reports_best(tmp_path):
  full = loop.train(image_task(), tmp_path / 'full', progress=False)
  part = tmp_path / 'part'
  loop.train(image_task(), part, progress=False)
  shutil.rmtree(part / 'checkpoints' / 'steps' / '20')      # as if killed after step 10
  resumed = loop.train(image_task(), part, progress=False)
  assert resumed.summary['resumed_from'] == 10
  a = ckpt_lib.restore_raw(inspection.resolve(tmp_path / 'full'))
  b = ckpt_lib.restore_raw(inspection.resolve(part))
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    assert np.array_equal(np.asarray(x), np.asarray(y))
  plain = loop.train(image_task(augment=None), tmp_path / 'plain', progress=False)
  assert not np.array_equal(np.asarray(jax.tree.leaves(plain.state.params)[0]),
                            np.asarray(jax.tree.leaves(full.state.params)[0]))   # it augments
  best = full.summary['best_validation']
  assert best['step'] in (10, 20) and set(best['eval']) == {'validation', 'test'}
  assert best['eval']['validation']['loss'] == pytest.approx(best['loss'])
  assert resumed.summary['best_validation'] == best     # the resumed run decides the same
