"""Configs: loading, command-line overrides, typed settings, clear errors."""

import pathlib

import pytest

from sparsejax import config as config_lib
from sparsejax import experiment, optim, sweep

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / 'configs'


def test_every_config_translates():
  experiments = [p for p in sorted(CONFIGS.parent.glob('experiments/*/*.py'))
                 if 'def get_config' in p.read_text()]     # folders may hold scripts too
  paths = sorted(CONFIGS.glob('*.py')) + experiments
  assert len(paths) >= 12 and len(experiments) >= 11
  for path in paths:
    settings = config_lib.to_settings(config_lib.load_config(path))
    assert settings.train.steps > 0, path
    if 'def get_sweep' in path.read_text():
      points, _ = sweep.load_sweep(path)    # every point's overrides are checked
      assert points, path


def test_variant_imports_base_and_overrides():
  rigl = config_lib.to_settings(config_lib.load_config(CONFIGS / 'mnist1d_rigl.py'))
  assert rigl.pruning.schedule == 'rigl' and rigl.pruning.sparsity == 0.9
  assert rigl.optimizer['learning_rate'] == 2e-2          # from the base
  assert rigl.pruning.options == {'allocation': 'erk', 'every': 100, 'end': 1125,
                                  'drop_fraction': 0.3}    # only what the config set


def test_overrides_typed_and_schedule_swapped_by_one_key():
  base = config_lib.load_config(CONFIGS / 'mnist1d_mlp.py')
  c = config_lib.apply_overrides(base, {'sparsity': '0.95', 'pruning.schedule': 'gradual',
                                        'train.steps': '20', 'model.options.hidden': '64',
                                        'train.eval_splits': "('test',)", 'pruning.end': '15'})
  s = config_lib.to_settings(c)
  assert s.pruning.sparsity == 0.95 and s.pruning.schedule == 'gradual'
  assert s.train.steps == 20 and s.model.options == {'hidden': 64}
  assert base.sparsity == 0.0          # the original is not modified
  sched = experiment.build_schedule(s.pruning, 0)
  assert type(sched).__name__ == 'Gradual' and sched.end == 15 and sched.every == 100
  # rigl's own keys do not carry over to a schedule that does not take them
  rigl = config_lib.load_config(CONFIGS / 'mnist1d_rigl.py')
  with pytest.raises(config_lib.ConfigError, match="'pruning.drop_fraction'.*'gradual'"):
    config_lib.apply_overrides(rigl, {'pruning.schedule': 'gradual'})


def test_split_overrides():
  rest, over = config_lib.split_overrides(
      ['train', '--config', 'a.py', '--config.sparsity=0.5', '--config.train.steps', '7'])
  assert rest == ['train', '--config', 'a.py']
  assert over == {'sparsity': '0.5', 'train.steps': '7'}


@pytest.mark.parametrize('key, value, message', [
    ('sparsty', '0.9', "'sparsty'.*did you mean 'sparsity'"),
    ('pruning.schedul', 'rigl', "'pruning.schedul'"),
    ('optimizer.learning_rate', 'fast', "'optimizer.learning_rate'"),
    ('nothing.here', '1', "'nothing.here'"),
])
def test_bad_override_names_the_key(key, value, message):
  base = config_lib.load_config(CONFIGS / 'mnist1d_mlp.py')
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.apply_overrides(base, {key: value})


def test_unknown_key_in_config_file(tmp_path):
  path = tmp_path / 'bad.py'
  path.write_text('from sparsejax.config import default_config\n'
                  'def get_config():\n'
                  '  c = default_config()\n'
                  '  c.unlock()\n'
                  '  c.optimizer.lerning_rate = 0.1\n'
                  '  return c\n')
  with pytest.raises(config_lib.ConfigError, match="'optimizer.lerning_rate'"):
    config_lib.load_config(path)
  with pytest.raises(config_lib.ConfigError, match='does not exist'):
    config_lib.load_config(tmp_path / 'missing.py')


@pytest.mark.parametrize('key, value, message', [
    ('sparsity', '1.5', "'sparsity'"),
    ('pruning.schedule', 'lottery', "'pruning.schedule'.*'lottery'"),
    ('train.steps', '0', "'train.steps'"),
    ('mesh.shape', '(3,)', "'mesh.shape'"),
])
def test_bad_values_named(key, value, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    c = config_lib.apply_overrides(config_lib.load_config(CONFIGS / 'mnist1d_mlp.py'),
                                   {key: value})
    config_lib.to_settings(c)


def test_builders_name_bad_settings():
  with pytest.raises(config_lib.ConfigError, match="optimizer.name.*'adamx'"):
    config_lib.to_settings(config_lib.apply_overrides(
        config_lib.default_config(), {'optimizer.name': 'adamx'}))
  s = config_lib.to_settings(config_lib.apply_overrides(
      config_lib.default_config(), {'sparsity': 0.5}))
  with pytest.raises(config_lib.ConfigError, match="dense does not prune"):
    experiment.build_schedule(s.pruning, 0)


def test_settings_hash_ignores_defaults():
  a = config_lib.default_config()
  b = config_lib.apply_overrides(a, {'seed': 0})          # the default value, set explicitly
  c = config_lib.apply_overrides(a, {'seed': 1})
  assert config_lib.settings_hash(a) == config_lib.settings_hash(b)
  assert config_lib.settings_hash(a) != config_lib.settings_hash(c)


def test_learning_rate_warmup_then_cosine():
  s = config_lib.to_settings(config_lib.apply_overrides(
      config_lib.default_config(), {'optimizer.schedule': 'cosine', 'optimizer.warmup_steps': 10,
                                    'optimizer.learning_rate': 1.0, 'train.steps': 110}))
  lr = optim.learning_rate_fn(s.optimizer, s.train.steps)
  assert float(lr(0)) == 0.0 and abs(float(lr(5)) - 0.5) < 1e-6
  assert abs(float(lr(10)) - 1.0) < 1e-6 and abs(float(lr(60)) - 0.5) < 1e-6
  assert abs(float(lr(110))) < 1e-6


def test_config_file_with_argument(tmp_path):
  path = tmp_path / 'sized.py'
  path.write_text('from sparsejax.config import default_config\n'
                  'def get_config(size):\n'
                  '  c = default_config()\n'
                  '  c.model.options = {"hidden": int(size)}\n'
                  '  return c\n')
  assert config_lib.load_config(f'{path}:64').model.options.to_dict() == {'hidden': 64}
  with pytest.raises(config_lib.ConfigError, match='does not exist'):
    config_lib.load_config(f'{tmp_path}/missing.py:64')
