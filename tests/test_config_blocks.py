"""The nested blocks `pruning.allocation`, `pruning.pattern` and `pruning.rule`
(sparsejax.config_pruning): a block says the same as the flat keys it stands
for (same settings, same run name and record, for every shipped config
rewritten in blocks), its keys and types come from the dataclasses and are
checked by a locked ConfigDict, overrides reach into it, and a block set
beside its own flat keys is an error."""

import dataclasses
import pathlib

import ml_collections
import pytest

from sparsejax import config as config_lib, config_pruning
from sparsejax.config import ConfigError
from sparsejax.core import allocation as alloc_lib, patterns, tree

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every shipped config file that is not a sweep of another (those load a base
# config and override it): the configs and the experiments' config files.
SHIPPED = sorted(p for p in [*(ROOT / 'configs').glob('*.py'),
                             *(ROOT / 'experiments').glob('*/config*.py')]
                 if 'def get_config' in p.read_text())


def to_blocks(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config with its flat allocation, pattern and rule keys moved into
  blocks, key for key."""
  d = config.to_dict()
  p = d['pruning']
  alloc = {('name' if k == 'allocation' else k): p.pop(k)
           for k in ('allocation', *alloc_lib.MODIFIERS) if k in p}
  if alloc:
    p['allocation'] = alloc
  if 'pattern' in p:
    p['pattern'] = {'name': p.pop('pattern'), **(p.pop('pattern_options', None) or {})}
  rule = {k: p.pop(k) for k in ('include', 'exclude', 'min_ndim') if k in p}
  if rule:
    p['rule'] = rule
  return ml_collections.ConfigDict(d)


def same(a, b):
  assert config_lib.settings_hash(a) == config_lib.settings_hash(b)
  assert config_lib.changed(a) == config_lib.changed(b)
  assert config_lib.record(a) == config_lib.record(b)
  assert config_lib.to_settings(a) == config_lib.to_settings(b)


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_in_blocks_is_the_same_run(path):
  flat = config_lib.load_config(path)
  blocks = to_blocks(flat)
  assert isinstance(blocks.pruning.get('rule'), ml_collections.ConfigDict)
  same(blocks, flat)
  # loading turns the blocks into the flat keys: what a workdir records
  assert config_lib.flattened(blocks).to_dict() == flat.to_dict()


def test_block_and_flat_forms_are_the_same_settings_and_hash():
  base = config_lib.load_config(ROOT / 'configs' / 'transformer_mnist1d.py')
  assert base.pruning.pattern == 'nm' and base.pruning.pattern_options.to_dict() == {
      'n': 2, 'm': 4}
  c = ml_collections.ConfigDict(base.to_dict())
  del c.pruning['pattern'], c.pruning['pattern_options']   # (a str key does not take a dict)
  c.pruning.pattern = {'name': 'nm', 'n': 2, 'm': 4}
  same(c, base)
  # the allocation block, and a ConfigDict block
  flat = config_lib.default_config()
  flat.pruning.schedule, flat.sparsity = 'rigl', 0.9
  flat.pruning.allocation, flat.pruning.erk_power_scale = 'erk', 1.0
  flat.pruning.overrides, flat.pruning.scales = (), {'output': 0.5}
  flat.pruning.exclude = '^input/'
  c = config_lib.default_config()
  c.pruning.schedule, c.sparsity = 'rigl', 0.9
  c.pruning.allocation = ml_collections.ConfigDict(
      {'name': 'erk', 'erk_power_scale': 1.0, 'overrides': (), 'scales': {'output': 0.5}})
  c.pruning.rule = {'include': None, 'exclude': '^input/', 'min_ndim': 2}
  same(c, flat)
  # a block sets only the keys it gives: modifiers alone keep the schedule's allocation
  c = config_lib.default_config()
  c.pruning.schedule = 'rigl'
  c.pruning.allocation = {'scales': {'output': 0.5}}
  assert config_lib.changed(c) == {'pruning.schedule': 'rigl',
                                   'pruning.scales': {'output': 0.5}}


def test_block_keys_come_from_the_dataclasses():
  def keys(block, given=None):
    return set(config_pruning.block_schema(block, given or {}).keys())
  assert keys('allocation') == {'name'} | {
      f.name for f in dataclasses.fields(alloc_lib.Allocation)} - {'method'}
  assert keys('rule') == {f.name for f in dataclasses.fields(tree.PrunableRule)}
  for name, cls in patterns.PATTERNS.items():
    assert keys('pattern', {'name': name}) == {'name'} | {
        f.name for f in dataclasses.fields(cls)}
  schema = config_pruning.block_schema('pattern', {'name': 'nm'})
  assert schema.is_locked and (schema.n, schema.m, schema.axis) == (2, 4, -2)


@pytest.mark.parametrize('block, match', [
    ({'allocation': {'name': 'erk', 'power': 2.0}},
     r"'pruning.allocation.power' is not a setting of an allocation "
     r"\(did you mean 'erk_power_scale'\?\)"),
    ({'allocation': {'name': 'erk', 'erk_power_scale': 'big'}},
     r"'pruning.allocation.erk_power_scale' must be float, got str"),
    ({'allocation': {'name': 3}}, r"'pruning.allocation.name' must be str, got int"),
    ({'pattern': {'name': 'nm', 'n': 2.5}}, r"'pruning.pattern.n' must be int, got float"),
    ({'pattern': {'name': 'nm', 'block': (2, 2)}},
     r"'pruning.pattern.block' is not a setting of pattern 'nm'"),
    ({'pattern': {'n': 2}}, r"'pruning.pattern.name' is required"),
    ({'pattern': {'name': 'diagonal'}}, r"'pruning.pattern.name': unknown sparsity pattern"),
    ({'rule': {'min_dim': 1}}, r"'pruning.rule.min_dim' .*did you mean 'min_ndim'"),
    ({'rule': {'include': 3}}, r"'pruning.rule.include' must be str, got int"),
    ({'rule': 'kernel'}, r"'pruning.rule' must be a group of settings"),
])
def test_a_bad_block_is_one_error_naming_the_key(block, match):
  c = config_lib.default_config()
  c.pruning.schedule = 'rigl'
  for key, value in block.items():
    c.pruning[key] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.to_settings(c)
  with pytest.raises(ConfigError, match=match):
    config_lib.settings_hash(c)


@pytest.mark.parametrize('block, flat, key', [
    ({'allocation': {'name': 'erk', 'scales': {'output': 0.5}}},
     {'scales': {'output': 0.5}}, 'pruning.scales'),
    ({'allocation': {'name': 'erk'}}, {'erk_power_scale': 2.0}, 'pruning.erk_power_scale'),
    ({'pattern': {'name': 'nm', 'n': 1}}, {'pattern_options': {'m': 4}},
     'pruning.pattern_options'),
    ({'rule': {'exclude': '^output/'}}, {'min_ndim': 1}, 'pruning.min_ndim'),
])
def test_a_block_beside_its_flat_keys_is_an_error(block, flat, key):
  c = config_lib.default_config()
  c.pruning.schedule = 'rigl'
  for k, v in {**block, **flat}.items():
    c.pruning[k] = v
  block_key = f'pruning.{next(iter(block))}'
  with pytest.raises(ConfigError, match=rf"'{key}' is set beside the block '{block_key}'"):
    config_lib.to_settings(c)


def test_a_block_in_a_config_file_and_overrides_into_blocks(tmp_path):
  path = tmp_path / 'blocks.py'
  path.write_text(
      'from sparsejax.config import load_config\n\n'
      'def get_config():\n'
      "  c = load_config('configs/transformer_mnist1d.py')\n"
      "  del c.pruning['pattern'], c.pruning['pattern_options']\n"
      "  c.pruning.pattern = {'name': 'nm', 'n': 2, 'm': 4}\n"
      "  c.pruning.rule = {'include': c.pruning.include, 'min_ndim': 2}\n"
      '  c.pruning.include = None\n'
      '  return c\n')
  flat = config_lib.load_config(ROOT / 'configs' / 'transformer_mnist1d.py')
  c = config_lib.load_config(path)
  assert c.pruning.pattern == 'nm' and 'rule' not in c.pruning    # the flat form
  assert config_lib.settings_hash(c) == config_lib.settings_hash(flat)
  pairs = [({'pruning.pattern.n': '1'}, {'pruning.pattern_options.n': '1'}),
           ({'pruning.pattern': "{'name': 'nm', 'm': 8}"}, {'pruning.pattern_options.m': '8'}),
           ({'pruning.allocation.name': 'erk'}, {'pruning.allocation': 'erk'}),
           ({'pruning.allocation.scales': "{'output': 0.5}"},
            {'pruning.scales': "{'output': 0.5}"}),
           ({'pruning.rule.min_ndim': '1'}, {'pruning.min_ndim': '1'}),
           ({'pruning.rule.exclude': '^embed/'}, {'pruning.exclude': '^embed/'})]
  for into_block, into_flat in pairs:
    got = config_lib.apply_overrides(c, into_block)
    same(got, config_lib.apply_overrides(flat, into_flat))
  assert config_lib.apply_overrides(c, {'pruning.pattern.n': '1'}).pruning.pattern_options \
      .to_dict() == {'n': 1, 'm': 4}
  with pytest.raises(ConfigError, match=r"'pruning.pattern.q' is not a setting of pattern 'nm'"):
    config_lib.apply_overrides(c, {'pruning.pattern.q': '1'})
  with pytest.raises(ConfigError, match=r"'pruning.rule.min_ndim' must be int, got str"):
    config_lib.apply_overrides(c, {'pruning.rule.min_ndim': 'two'})
  with pytest.raises(ConfigError, match=r"'pruning.pattern.block' is not a setting of "
                                        r"pattern 'nm'"):
    config_lib.apply_overrides(c, {'pruning.pattern.block': '(2, 2)'})
  # a pattern swapped by name: the old pattern's options do not carry over
  got = config_lib.apply_overrides(c, {'pruning.pattern': "{'name': 'block', 'block': (2, 2)}"})
  assert got.pruning.pattern == 'block'
  assert got.pruning.pattern_options.to_dict() == {'block': (2, 2)}
  got = config_lib.apply_overrides(c, {'pruning.pattern.name': 'unstructured'})
  assert got.pruning.pattern == 'unstructured' and got.pruning.pattern_options.to_dict() == {}
  config_lib.to_settings(got)
