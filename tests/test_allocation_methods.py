"""Allocation methods as classes: the built-in four give exactly the values
they gave before they were classes (literals recorded from that code), and a
method named by import path runs RigL at the sparsities it asks for."""

import hashlib
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import config as config_lib, experiment
from sparsejax.core import allocation as alloc_lib, imp, select
from sparsejax.core import tree as tree_lib
from sparsejax.programs import lottery as lottery_lib
from sparsejax.train.task import SetupError

SHAPES = {
    'mlp': {'fc1': (784, 300), 'fc2': (300, 100), 'out': (100, 10)},
    'conv': {'conv1': (3, 3, 3, 16), 'conv2': (3, 3, 16, 32), 'dense': (512, 10)},
    'capped': {'small': (10, 10), 'mid': (50, 200), 'big': (100, 100)},
}
VARIANTS = {
    'plain': {},
    'over': {'overrides': {'^(fc1|conv1|small)$': 0.0}},
    'scale': {'scales': {'(out|dense|big)': 0.5}},
    'both': {'overrides': {'fc2|conv2|mid': 0.3}, 'scales': {'out|dense|big': 0.5}},
    'power': {'erk_power_scale': 0.5},
}
# (shapes, method, variant, target): per-leaf sparsities in SHAPES order, as
# the if/elif implementation (before the method classes) computed them.
LAYER_SPARSITIES = {
    ('mlp', 'uniform', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('mlp', 'uniform', 'plain', 0.5): (0.5, 0.5, 0.5),
    ('mlp', 'uniform', 'plain', 0.9): (0.9, 0.9, 0.9),
    ('mlp', 'uniform', 'plain', 0.99): (0.99, 0.99, 0.99),
    ('mlp', 'uniform', 'over', 0.9): (0.0, 0.9, 0.9),
    ('mlp', 'uniform', 'scale', 0.9): (0.9, 0.9, 0.45),
    ('mlp', 'uniform', 'both', 0.9): (0.9, 0.3, 0.45),
    ('mlp', 'global', 'plain', 0.0): (None, None, None),
    ('mlp', 'global', 'plain', 0.5): (None, None, None),
    ('mlp', 'global', 'plain', 0.9): (None, None, None),
    ('mlp', 'global', 'plain', 0.99): (None, None, None),
    ('mlp', 'global', 'over', 0.9): (0.0, None, None),
    ('mlp', 'global', 'scale', 0.9): (None, None, 0.45),
    ('mlp', 'global', 'both', 0.9): (None, 0.3, 0.45),
    ('mlp', 'er', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('mlp', 'er', 'plain', 0.5): (0.5659013605442176, 0.0, 0.0),
    ('mlp', 'er', 'plain', 0.9): (0.9204322294955718, 0.769811320754717, 0.0),
    ('mlp', 'er', 'plain', 0.99): (0.9923031734651201, 0.977733166039314, 0.8162986198243412),
    ('mlp', 'er', 'over', 0.9): (0.0, 0.9189542483660131, 0.331372549019608),
    ('mlp', 'er', 'scale', 0.9): (0.9176371087518566, 0.7617250673854448, 0.45),
    ('mlp', 'er', 'both', 0.9): (0.9, 0.3, 0.45),
    ('mlp', 'er', 'power', 0.0): (0.0, 0.0, 0.0),
    ('mlp', 'er', 'power', 0.5): (0.5384771787376949, 0.21500558536313885, 0.0),
    ('mlp', 'er', 'power', 0.9): (0.9085574584693324, 0.8444673133054537, 0.5532663688494033),
    ('mlp', 'er', 'power', 0.99): (0.9908557458469333, 0.9844467313305454, 0.9553266368849402),
    ('mlp', 'erk', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('mlp', 'erk', 'plain', 0.5): (0.5659013605442176, 0.0, 0.0),
    ('mlp', 'erk', 'plain', 0.9): (0.9204322294955718, 0.769811320754717, 0.0),
    ('mlp', 'erk', 'plain', 0.99): (0.9923031734651201, 0.977733166039314, 0.8162986198243412),
    ('mlp', 'erk', 'over', 0.9): (0.0, 0.9189542483660131, 0.331372549019608),
    ('mlp', 'erk', 'scale', 0.9): (0.9176371087518566, 0.7617250673854448, 0.45),
    ('mlp', 'erk', 'both', 0.9): (0.9, 0.3, 0.45),
    ('mlp', 'erk', 'power', 0.0): (0.0, 0.0, 0.0),
    ('mlp', 'erk', 'power', 0.5): (0.5384771787376949, 0.21500558536313885, 0.0),
    ('mlp', 'erk', 'power', 0.9): (0.9085574584693324, 0.8444673133054537, 0.5532663688494033),
    ('mlp', 'erk', 'power', 0.99): (0.9908557458469333, 0.9844467313305454, 0.9553266368849402),
    ('conv', 'uniform', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('conv', 'uniform', 'plain', 0.5): (0.5, 0.5, 0.5),
    ('conv', 'uniform', 'plain', 0.9): (0.9, 0.9, 0.9),
    ('conv', 'uniform', 'plain', 0.99): (0.99, 0.99, 0.99),
    ('conv', 'uniform', 'over', 0.9): (0.0, 0.9, 0.9),
    ('conv', 'uniform', 'scale', 0.9): (0.9, 0.9, 0.45),
    ('conv', 'uniform', 'both', 0.9): (0.9, 0.3, 0.45),
    ('conv', 'global', 'plain', 0.0): (None, None, None),
    ('conv', 'global', 'plain', 0.5): (None, None, None),
    ('conv', 'global', 'plain', 0.9): (None, None, None),
    ('conv', 'global', 'plain', 0.99): (None, None, None),
    ('conv', 'global', 'over', 0.9): (0.0, None, None),
    ('conv', 'global', 'scale', 0.9): (None, None, 0.45),
    ('conv', 'global', 'both', 0.9): (None, 0.3, 0.45),
    ('conv', 'er', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('conv', 'er', 'plain', 0.5): (0.0, 0.5432389937106918, 0.5032724056603773),
    ('conv', 'er', 'plain', 0.9): (0.6425185185185187, 0.9153333333333333, 0.907925),
    ('conv', 'er', 'plain', 0.99): (0.9642518518518518, 0.9915333333333334, 0.9907925),
    ('conv', 'er', 'over', 0.9): (0.0, 0.9044025157232705, 0.8960377358490567),
    ('conv', 'er', 'scale', 0.9): (0.6691542288557215, 0.9216417910447762, 0.45),
    ('conv', 'er', 'both', 0.9): (0.9, 0.3, 0.45),
    ('conv', 'er', 'power', 0.0): (0.0, 1.1102230246251565e-16, 0.0),
    ('conv', 'er', 'power', 0.5): (0.036601015304779105, 0.5311481427604225, 0.511065960849279),
    ('conv', 'er', 'power', 0.9): (0.8073202030609559, 0.9062296285520846, 0.9022131921698558),
    ('conv', 'er', 'power', 0.99): (0.9807320203060955, 0.9906229628552085, 0.9902213192169855),
    ('conv', 'erk', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('conv', 'erk', 'plain', 0.5): (0.5108461206630923, 0.9009463394342763, 0.13823315307820294),
    ('conv', 'erk', 'plain', 0.9): (0.9021692241326185, 0.9801892678868552, 0.8276466306156406),
    ('conv', 'erk', 'plain', 0.99): (0.9902169224132619, 0.9980189267886855, 0.9827646630615641),
    ('conv', 'erk', 'over', 0.9): (0.0, 0.9802083333333333, 0.8278125000000001),
    ('conv', 'erk', 'scale', 0.9): (0.6308016877637131, 0.9252373417721519, 0.45),
    ('conv', 'erk', 'both', 0.9): (0.9, 0.3, 0.45),
    ('conv', 'erk', 'power', 0.0): (0.0, 0.0, 0.0),
    ('conv', 'erk', 'power', 0.5): (0.4538470468169288, 0.754231171067618, 0.2750861014639656),
    ('conv', 'erk', 'power', 0.9): (0.8907694093633858, 0.9508462342135235, 0.8550172202927931),
    ('conv', 'erk', 'power', 0.99): (0.9890769409363386, 0.9950846234213524, 0.9855017220292793),
    ('capped', 'uniform', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('capped', 'uniform', 'plain', 0.5): (0.5, 0.5, 0.5),
    ('capped', 'uniform', 'plain', 0.9): (0.9, 0.9, 0.9),
    ('capped', 'uniform', 'plain', 0.99): (0.99, 0.99, 0.99),
    ('capped', 'uniform', 'over', 0.9): (0.0, 0.9, 0.9),
    ('capped', 'uniform', 'scale', 0.9): (0.9, 0.9, 0.45),
    ('capped', 'uniform', 'both', 0.9): (0.9, 0.3, 0.45),
    ('capped', 'global', 'plain', 0.0): (None, None, None),
    ('capped', 'global', 'plain', 0.5): (None, None, None),
    ('capped', 'global', 'plain', 0.9): (None, None, None),
    ('capped', 'global', 'plain', 0.99): (None, None, None),
    ('capped', 'global', 'over', 0.9): (0.0, None, None),
    ('capped', 'global', 'scale', 0.9): (None, None, 0.45),
    ('capped', 'global', 'both', 0.9): (None, 0.3, 0.45),
    ('capped', 'er', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('capped', 'er', 'plain', 0.5): (0.0, 0.4472222222222222, 0.5577777777777777),
    ('capped', 'er', 'plain', 0.9): (0.14468085106383, 0.8930851063829788, 0.914468085106383),
    ('capped', 'er', 'plain', 0.99): (0.9144680851063829, 0.9893085106382978, 0.9914468085106383),
    ('capped', 'er', 'over', 0.9): (0.0, 0.8888888888888888, 0.9111111111111111),
    ('capped', 'er', 'scale', 0.9): (0.251851851851852, 0.9064814814814814, 0.45),
    ('capped', 'er', 'both', 0.9): (0.9, 0.3, 0.45),
    ('capped', 'er', 'power', 0.0): (0.0, 0.0, 1.1102230246251565e-16),
    ('capped', 'er', 'power', 0.5): (0.0, 0.4747752752245815, 0.5302247247754185),
    ('capped', 'er', 'power', 0.9): (0.7043166053582103, 0.8954601332822661, 0.9064967006641518),
    ('capped', 'er', 'power', 0.99): (0.970431660535821, 0.9895460133282266, 0.9906496700664151),
    ('capped', 'erk', 'plain', 0.0): (0.0, 0.0, 0.0),
    ('capped', 'erk', 'plain', 0.5): (0.0, 0.4472222222222222, 0.5577777777777777),
    ('capped', 'erk', 'plain', 0.9): (0.14468085106383, 0.8930851063829788, 0.914468085106383),
    ('capped', 'erk', 'plain', 0.99): (0.9144680851063829, 0.9893085106382978, 0.9914468085106383),
    ('capped', 'erk', 'over', 0.9): (0.0, 0.8888888888888888, 0.9111111111111111),
    ('capped', 'erk', 'scale', 0.9): (0.251851851851852, 0.9064814814814814, 0.45),
    ('capped', 'erk', 'both', 0.9): (0.9, 0.3, 0.45),
    ('capped', 'erk', 'power', 0.0): (0.0, 0.0, 1.1102230246251565e-16),
    ('capped', 'erk', 'power', 0.5): (0.0, 0.4747752752245815, 0.5302247247754185),
    ('capped', 'erk', 'power', 0.9): (0.7043166053582103, 0.8954601332822661, 0.9064967006641518),
    ('capped', 'erk', 'power', 0.99): (0.970431660535821, 0.9895460133282266, 0.9906496700664151),
}
# sha256[:16] of the masks (leaves in path order, bits packed) on a 3-layer MLP
# whose weights come from numpy's seeded generator, from that same code.
MASK_DIGESTS = {
    'prune/uniform': '6b5c7963c249b99c',
    'prune/global': '4581954ac964875f',
    'prune/erk': '094bcd63d4f03984',
    'prune/erk_mods': 'fd53152459e953c0',
    'rigl/erk': 'c7450aa42c46d99a',
    'rigl/erk_mods': 'bf1ad5166eedca45',
    'imp/uniform_scaled': '108f27af87f69ea6',
    'imp/global_scaled': 'b56fe2a486e051cf',
}
MODS = dict(scales={'Dense_2': 0.5}, erk_power_scale=0.7)


@pytest.mark.parametrize('case', sorted(LAYER_SPARSITIES), ids=str)
def test_layer_sparsities_bitwise_as_before(case):
  shapes, method, variant, target = case
  got = sj.Allocation(method, **VARIANTS[variant]).layer_sparsities(SHAPES[shapes], target)
  assert list(got) == list(SHAPES[shapes])
  assert tuple(got.values()) == LAYER_SPARSITIES[case]   # exact floats (None: pooled)


def _mlp_params():
  rng = np.random.default_rng(0)
  return {f'Dense_{i}': {'kernel': jnp.asarray(rng.standard_normal(s), jnp.float32),
                         'bias': jnp.zeros(s[1])}
          for i, s in enumerate([(40, 32), (32, 24), (24, 10)])}


def _digest(masks):
  h = hashlib.sha256()
  for path, m in sorted(tree_lib.leaves_with_paths(masks), key=lambda x: x[0]):
    h.update(path.encode())
    h.update(np.packbits(np.asarray(m)).tobytes())
  return h.hexdigest()[:16]


def test_masks_bitwise_as_before():
  params, got = _mlp_params(), {}
  for method in ('uniform', 'global', 'erk'):
    got[f'prune/{method}'] = _digest(sj.prune(params, 0.9, allocation=method)[1])
  erk_mods = sj.Allocation('erk', **MODS)
  got['prune/erk_mods'] = _digest(sj.prune(params, 0.9, allocation=erk_mods)[1])
  got['rigl/erk'] = _digest(sj.make_schedule('rigl', sparsity=0.8).init(params)[0])
  got['rigl/erk_mods'] = _digest(
      sj.make_schedule('rigl', sparsity=0.8, allocation=erk_mods).init(params)[0])
  for method in ('uniform', 'global'):
    masks = sj.dense_masks(params)
    for _ in range(2):
      masks = imp.prune_remaining(params, masks, 0.3,
                                  allocation=sj.Allocation(method, scales={'Dense_2': 0.5}))
    got[f'imp/{method}_scaled'] = _digest(masks)
  assert got == MASK_DIGESTS


def test_described_and_compared_as_before():
  # Runs record and compare the schedule's description on resume.
  described = sj.make_schedule('rigl', sparsity=0.8,
                               allocation=sj.Allocation('erk', **MODS)).describe()
  assert described['allocation'] == {'type': 'Allocation', 'method': 'erk', 'overrides': [],
                                     'scales': [['Dense_2', 0.5]], 'erk_power_scale': 0.7}
  assert sj.Allocation('erk') == sj.Allocation('erk') != sj.Allocation('er')
  assert alloc_lib.METHODS == ('uniform', 'global', 'er', 'erk') == tuple(alloc_lib.ALLOCATIONS)


# A method as a user writes it, in its own module: leaf i of n at target * (i + 1) / n.
RAMP = '''
from sparsejax.core.allocation import AllocationMethod

class Ramp(AllocationMethod):
  prunes_remaining = True

  def split(self, shapes, sparsity, allocation):
    n = len(shapes)
    return {p: sparsity * (i + 1) / n for i, p in enumerate(shapes)}

class Pool(AllocationMethod):
  pooled = True

  def split(self, shapes, sparsity, allocation):
    return {p: None for p in shapes}

class NoSplit:
  pass

class WrongKeys(AllocationMethod):
  def split(self, shapes, sparsity, allocation):
    return {'elsewhere': sparsity}

class SilentPool(AllocationMethod):
  def split(self, shapes, sparsity, allocation):
    return {p: None for p in shapes}
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  (tmp_path / 'my_allocations.py').write_text(textwrap.dedent(RAMP))
  monkeypatch.syspath_prepend(str(tmp_path))
  return 'my_allocations'


def test_rigl_with_a_method_named_by_import_path(user_module):
  params = {'w1': jax.random.normal(jax.random.key(0), (16, 12)),
            'w2': jax.random.normal(jax.random.key(1), (12, 8)),
            'w3': jax.random.normal(jax.random.key(2), (8, 4))}
  asked = {'w1': 0.3, 'w2': 0.6, 'w3': 0.9}   # Ramp at 0.9 over three leaves
  rigl = sj.make_schedule('rigl', sparsity=0.9, allocation=f'{user_module}:Ramp', every=2,
                          end=100, drop_fraction=0.5, decay='constant')
  assert type(rigl.allocation.method_object).__name__ == 'Ramp'
  got = rigl.layer_sparsities(params)
  assert got.keys() == asked.keys()
  np.testing.assert_allclose(list(got.values()), list(asked.values()), rtol=1e-12)
  tx = sj.sparsify(optax.sgd(0.1), rigl)
  state = tx.init(params)
  p = sj.masked_params(params, state)
  first, moved = sj.get_masks(state), False
  for step in range(5):     # mask updates at steps 2 and 4
    grads = jax.tree.map(lambda w, k=step: jax.random.normal(jax.random.key(10 + k), w.shape), p)
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
    masks = sj.get_masks(state)
    for name, s in asked.items():
      n = masks[name].size
      assert int(jnp.sum(masks[name])) == int(select.keep_count(n, s)), (step, name)
      assert np.all(np.asarray(p[name])[~np.asarray(masks[name])] == 0.0), (step, name)
    moved |= any(bool(jnp.any(masks[k] != first[k])) for k in asked)
  assert moved    # RigL dropped and grew weights under the custom allocation


def test_config_takes_an_import_path(user_module):
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'pruning.schedule': 'rigl', 'sparsity': 0.9, 'pruning.allocation': f'{user_module}:Ramp',
      'pruning.overrides': {'w3': 0.0}})
  schedule = experiment.build_schedule(config_lib.to_settings(c).pruning)
  a = schedule.allocation
  assert a.method == f'{user_module}:Ramp' and a.overrides == (('w3', 0.0),)
  assert a.layer_sparsities({'w1': (4, 4), 'w2': (4, 4), 'w3': (4, 4)}, 0.8) == {
      'w1': 0.4, 'w2': 0.8, 'w3': 0.0}
  assert schedule.describe()['allocation']['method'] == f'{user_module}:Ramp'
  # an object works from Python, as a class or an instance
  mod = __import__(user_module)
  for method in (mod.Ramp, mod.Ramp()):
    assert sj.Allocation(method).layer_sparsities({'a': (2, 2), 'b': (2, 2)}, 0.5) == {
        'a': 0.25, 'b': 0.5}


def test_one_capability_check_for_imp_and_the_lottery(user_module):
  for name in ('er', 'erk', f'{user_module}:Pool'):
    with pytest.raises(ValueError, match=rf"prunes a fraction of what remains.*{name!r}"):
      sj.make_schedule('imp', allocation=name)
    with pytest.raises(ValueError, match='uniform or global'):
      imp.prune_remaining({'w': jnp.ones((4, 4))}, {'w': jnp.ones((4, 4), bool)}, 0.5,
                          allocation=name)
    with pytest.raises(SetupError, match='the lottery prunes a fraction'):
      lottery_lib.Lottery(allocation=sj.Allocation(name))
    with pytest.raises(SetupError, match='the lottery prunes a fraction'):
      lottery_lib.Lottery(allocation=name)        # a name, as schedules take it
  assert lottery_lib.Lottery(allocation='global').allocation == sj.Allocation('global')
  with pytest.raises(SetupError, match='allocation must be an Allocation or a method name'):
    lottery_lib.Lottery(allocation=0.5)
  assert [n for n, c in alloc_lib.ALLOCATIONS.items() if c.prunes_remaining] == [
      'uniform', 'global']
  sj.make_schedule('imp', allocation=f'{user_module}:Ramp')   # it says it can
  w = jnp.arange(1.0, 17.0).reshape(2, 8)
  masks = imp.prune_remaining({'a': w, 'b': w}, {'a': jnp.ones((2, 8), bool),
                                                 'b': jnp.ones((2, 8), bool)},
                              0.5, allocation=f'{user_module}:Ramp')
  assert int(masks['a'].sum()) == 12 and int(masks['b'].sum()) == 8


def test_pooled_method_refused_by_rigl(user_module):
  for name in ('global', f'{user_module}:Pool'):
    with pytest.raises(ValueError, match=rf'keeps per-layer counts.*not {name}'):
      sj.make_schedule('rigl', allocation=name)


@pytest.mark.parametrize('method, match', [
    ('sorted', r"unknown allocation 'sorted'.*'erk'.*import path"),
    ('no_such_module_xyz:Ramp', "cannot import 'no_such_module_xyz'"),
    ('{mod}:Missing', "has no 'Missing'"),
    ('{mod}:NoSplit', 'has no split'),
])
def test_bad_method_named(user_module, method, match):
  with pytest.raises(ValueError, match=match):
    sj.Allocation(method.format(mod=user_module))
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'pruning.schedule': 'oneshot', 'sparsity': 0.5,
      'pruning.allocation': method.format(mod=user_module)})
  with pytest.raises(config_lib.ConfigError, match='allocation'):
    experiment.build_schedule(config_lib.to_settings(c).pruning)


@pytest.mark.parametrize('method, match', [
    ('WrongKeys', r"sparsities for \['elsewhere'\]"),
    ('SilentPool', 'does not set pooled'),
])
def test_bad_split_named(user_module, method, match):
  with pytest.raises(ValueError, match=match):
    sj.Allocation(f'{user_module}:{method}').layer_sparsities({'a': (2, 2)}, 0.5)
