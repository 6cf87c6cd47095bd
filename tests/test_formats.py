"""Formats: weights, merged models and exports as safetensors, a LoRA delta
in the Hugging Face PEFT library's adapter layout (checked with PEFT's own
formula against the base's Hugging Face weights), and a pruned Llama as a
Hugging Face folder that `sparsejax perplexity --model DIR` loads. The runs
are the tiny Llama fixture on a few random token windows (`tokens`)."""

import json
import pathlib
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest

pytest.importorskip('safetensors.numpy')
pytest.importorskip('tokenizers')

from sparsejax import cli, config as config_lib, experiment, prune_run  # noqa: E402
from sparsejax.core import tree as tree_lib  # noqa: E402
from sparsejax.data.base import ArraySource, Dataset  # noqa: E402
from sparsejax.models import llama_weights as lw, pretrained  # noqa: E402
from sparsejax.programs import (export, export_formats, peft, peft_base,  # noqa: E402
                                peft_checkpoint as pc)
from sparsejax.train import checkpoint as ckpt_lib, weights as weights_lib  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / 'tests' / 'fixtures' / 'tiny_llama'
TEXT = 'In the beginning God created the heaven and the earth. ' * 12


def tokens(n=24, seqlen=16, seed=0):
  """Random byte windows as an 'lm' dataset: 16 for training, 8 for test."""
  w = np.random.default_rng(seed).integers(0, 256, (n, seqlen)).astype(np.int32)
  return Dataset('tokens', ArraySource(w[:16, :-1], w[:16, 1:]),
                 ArraySource(w[16:, :-1], w[16:, 1:]), None, num_classes=256,
                 input_shape=(seqlen - 1,), input_dtype=np.int32, task='lm')


def abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """The tiny Llama as a save_hf folder with a byte tokenizer and the
  fixture's generation_config.json (eos id 2)."""
  from test_perplexity import byte_tokenizer
  params, config = lw.load_hf(FIXTURE)
  folder = lw.save_hf(tmp_path_factory.mktemp('tiny') / 'tiny', params, config,
                      tokenizer=byte_tokenizer())
  shutil.copy(FIXTURE / 'generation_config.json', folder)
  return folder


def llama_config(tiny, **over):
  return config_lib.apply_overrides(config_lib.default_config(), {
      'data.name': 'test_formats:tokens', 'data.batch_size': 4, 'data.eval_batch_size': 8,
      'model.name': 'llama', 'model.options': {'pretrained': str(tiny)},
      'finetune.init_from': str(tiny), 'pruning.exclude': '^embed/', 'train.steps': 2,
      'train.eval_every': 2, 'train.checkpoint_every': 2, 'train.log_every': 2, **over})


@pytest.fixture(scope='module')
def lora_run(tiny, tmp_path_factory):
  """LoRA (rank 2, alpha 3: scale 1.5) on q, v and down of the tiny Llama."""
  workdir = tmp_path_factory.mktemp('lora')
  experiment.run_finetune(llama_config(tiny, **{
      'finetune.method': 'lora', 'finetune.rank': 2, 'finetune.alpha': 3.0,
      'finetune.targets': r'attention/(query|value)/kernel|mlp/down/kernel',
      'optimizer.learning_rate': 0.05}), workdir)
  return workdir


@pytest.fixture(scope='module')
def pruned_run(tiny, tmp_path_factory):
  """`sparsejax prune` (magnitude 2:4) of the tiny Llama: a prune workdir."""
  workdir = tmp_path_factory.mktemp('pruned')
  prune_run.run_prune(llama_config(tiny), workdir, method='magnitude', nm='2:4',
                      calibration=8, evaluate=False, log=lambda *a: None)
  return workdir


# --- weights files ----------------------------------------------------------------------

def test_weights_round_trip_bitwise_in_both_containers(tmp_path):
  params = {'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3).T,   # a view
                      'bias': np.array([-0.0, np.inf, 1e-38], np.float32)},
            'half': np.linspace(-3, 3, 5).astype(ml_dtypes.bfloat16),
            'count': np.arange(4, dtype=np.int32), 'scalar': np.float32(2.5)}
  state = {'bn': {'mean': np.ones(3, np.float64)}}
  for suffix in ('npz', 'safetensors'):
    path = weights_lib.write_weights(tmp_path / f'w.{suffix}', params, state)
    got, got_state = weights_lib.load_weights(path, abstract(params), abstract(state))
    for (p, want), (_, x) in zip(tree_lib.leaves_with_paths(params),
                                 tree_lib.leaves_with_paths(got)):
      want = np.asarray(want)
      assert x.dtype == want.dtype and x.shape == want.shape, (suffix, p)
      assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(want).tobytes(), p
    np.testing.assert_array_equal(got_state['bn']['mean'], 1.0)
    # params alone from a file that also holds model state
    weights_lib.load_weights(path, abstract(params))
  meta = weights_lib.safetensors_metadata(tmp_path / 'w.safetensors')
  assert meta['format'] == 'sparsejax-weights' and meta['sparsejax_version']
  with pytest.raises(ckpt_lib.CheckpointError, match=r"'\.pt' is neither"):
    weights_lib.write_weights(tmp_path / 'w.pt', params)
  with pytest.raises(ckpt_lib.CheckpointError, match="cannot store 'params/name'"):
    weights_lib.write_weights(tmp_path / 'x.safetensors', {'name': np.array(['a'])})


# --- exports ----------------------------------------------------------------------------

def _masked():
  rng = np.random.default_rng(0)
  mask = np.zeros((8, 6), bool)
  mask[::4] = mask[1::4] = True            # 2:4 along the inputs
  params = {'a': {'kernel': rng.normal(size=(8, 6)).astype(np.float32) * mask,
                  'bias': rng.normal(size=6).astype(np.float32)}}
  return params, {'a': {'kernel': mask, 'bias': None}}


@pytest.mark.parametrize('fmt', ['csr', 'nm', 'ell', 'dense'])
def test_export_as_safetensors_loads_as_the_npz_export(tmp_path, fmt):
  params, masks = _masked()
  state = {'stats': {'mean': np.arange(3.0, dtype=np.float32)}}
  for st in (False, True):
    rep = export_formats.write_export(params, state, masks, fmt, tmp_path / str(st), safetensors=st)
    assert pathlib.Path(rep['file']).name == export_formats.CONTAINERS[st]
  npz, npz_state = export.load(tmp_path / 'False', as_sparse=False)
  got, got_state = export.load(tmp_path / 'True', as_sparse=False)
  for (p, a), (_, b) in zip(tree_lib.leaves_with_paths(npz), tree_lib.leaves_with_paths(got)):
    np.testing.assert_array_equal(a, b, err_msg=p)
  np.testing.assert_array_equal(got['a']['kernel'], params['a']['kernel'])
  np.testing.assert_array_equal(got_state['stats']['mean'], [0, 1, 2])
  if fmt == 'dense':        # a weights file as it is, and the masks with it
    np.testing.assert_array_equal(export.load_masks(tmp_path / 'True')['a']['kernel'],
                                  masks['a']['kernel'])
    again, _ = weights_lib.load_weights(tmp_path / 'True' / 'weights.safetensors',
                                        abstract(params))
    np.testing.assert_array_equal(again['a']['kernel'], params['a']['kernel'])


def test_an_export_written_before_safetensors_still_loads(tmp_path):
  params, masks = _masked()
  export_formats.write_export(params, {}, masks, 'csr', tmp_path)
  meta = json.loads((tmp_path / 'export.json').read_text())
  del meta['file']                         # export.json as it was written before
  (tmp_path / 'export.json').write_text(json.dumps(meta))
  got, _ = export.load(tmp_path, as_sparse=False)
  np.testing.assert_array_equal(got['a']['kernel'], params['a']['kernel'])


# --- the pruned Llama: safetensors, a Hugging Face folder, perplexity -----------------------

def test_pruned_llama_as_safetensors_and_as_a_hugging_face_folder(tiny, pruned_run, tmp_path,
                                                                 capsys):
  params, masks = prune_run.load_pruned(pruned_run)
  # the pruned checkpoint as one safetensors file, its outputs checked
  assert cli.main(['export', str(pruned_run), '--format', 'dense', '--safetensors',
                   '--out', str(tmp_path / 'dense')]) == 0
  out = capsys.readouterr().out
  assert 'weights.safetensors' in out and '(tolerance' in out
  again, _ = weights_lib.load_weights(tmp_path / 'dense' / 'weights.safetensors',
                                      abstract(params))
  for (p, a), (_, b) in zip(tree_lib.leaves_with_paths(params),
                            tree_lib.leaves_with_paths(again)):
    np.testing.assert_array_equal(a, b, err_msg=p)
  # ... and as a Hugging Face folder that the perplexity command loads
  assert cli.main(['export', str(pruned_run), '--hf', str(tmp_path / 'hf')]) == 0
  out = capsys.readouterr().out
  assert 'max |difference| 0.00e+00, same architecture: True' in out
  assert json.loads((tmp_path / 'hf' / 'generation_config.json').read_text()) == {
      'eos_token_id': 2}
  lm = pretrained.load_lm(str(tmp_path / 'hf'))
  assert lm.eos_ids == (2,) and lm.config == lw.load_hf(FIXTURE)[1]
  text = tmp_path / 'text.txt'
  text.write_text(TEXT)
  ppl = {}
  for name, model in (('hf', ['--model', str(tmp_path / 'hf')]),
                      ('run', ['--model', str(tiny), '--weights', str(pruned_run)])):
    assert cli.main(['perplexity', *model, '--text', str(text), '--seqlen', '32',
                     '--out', str(tmp_path / f'{name}.jsonl')]) == 0
    ppl[name] = json.loads((tmp_path / f'{name}.jsonl').read_text())['perplexity']
  assert ppl['hf'] == pytest.approx(ppl['run'], rel=1e-5)
  dense = json.loads((tmp_path / 'run.jsonl').read_text())
  assert dense['windows'] > 5


# --- LoRA in the PEFT library's layout -----------------------------------------------------

def test_lora_adapter_is_pefts_formula_on_the_hugging_face_base(tiny, lora_run, tmp_path,
                                                                capsys):
  out = tmp_path / 'adapter'
  assert cli.main(['export', str(lora_run), '--peft-delta', '--layout', 'peft',
                   '--out', str(out)]) == 0
  assert 'lora delta (peft layout)' in capsys.readouterr().out
  config = json.loads((out / 'adapter_config.json').read_text())
  assert {k: config[k] for k in ('peft_type', 'r', 'lora_alpha', 'bias', 'fan_in_fan_out',
                                 'task_type', 'base_model_name_or_path')} == {
      'peft_type': 'LORA', 'r': 2, 'lora_alpha': 3, 'bias': 'none', 'fan_in_fan_out': False,
      'task_type': 'CAUSAL_LM', 'base_model_name_or_path': str(tiny)}
  assert config['target_modules'] == [f'model.layers.{i}.{m}' for i in (0, 1) for m in (
      'mlp.down_proj', 'self_attn.q_proj', 'self_attn.v_proj')]
  adapter = weights_lib.read_arrays(out / 'adapter_model.safetensors')
  assert weights_lib.safetensors_metadata(out / 'adapter_model.safetensors')['format'] == 'pt'
  assert len(adapter) == 2 * len(config['target_modules'])
  base = lw.read_hf_weights(tiny)              # torch layout: weight (out, in)
  with np.load(lora_run / 'merged.npz') as f:
    merged = {k[len('params/'):]: f[k] for k in f.files}
  leaf = {'mlp.down_proj': 'mlp/down', 'self_attn.q_proj': 'attention/query',
          'self_attn.v_proj': 'attention/value'}
  scaling = config['lora_alpha'] / config['r']
  for module in config['target_modules']:
    a = adapter[f'base_model.model.{module}.lora_A.weight']
    b = adapter[f'base_model.model.{module}.lora_B.weight']
    w = base[f'{module}.weight']
    assert a.shape == (2, w.shape[1]) and b.shape == (w.shape[0], 2)
    peft_weight = w + scaling * (b @ a)        # what PEFT's merge computes
    i, name = module.split('.')[2], module.split('.', 3)[3]
    ours = merged[f'block_{i}/{leaf[name]}/kernel'].T
    assert np.any(b != 0)
    np.testing.assert_allclose(peft_weight, ours, rtol=1e-6, atol=1e-6)
  # merged back from the adapter folder, as safetensors: the run's merged.npz
  assert cli.main(['merge', str(out), '--out', str(tmp_path / 'full.safetensors')]) == 0
  full = weights_lib.read_arrays(tmp_path / 'full.safetensors')
  assert sorted(full) == sorted(f'params/{p}' for p in merged)
  for p, x in merged.items():
    np.testing.assert_array_equal(full[f'params/{p}'], x, err_msg=p)
  # the same run as a Hugging Face folder: its merged weights
  assert cli.main(['export', str(lora_run), '--hf', str(tmp_path / 'hf')]) == 0
  hf_params, _ = lw.load_hf(tmp_path / 'hf')
  for p, x in tree_lib.leaves_with_paths(hf_params):
    np.testing.assert_array_equal(x, merged[p], err_msg=p)


def test_sparsejax_layout_as_safetensors_merges_bitwise(lora_run, tmp_path):
  rep = pc.save_delta(lora_run, tmp_path / 'delta', safetensors=True)
  assert rep['max_abs_diff_vs_merged_npz'] == 0.0
  assert sorted(f.name for f in (tmp_path / 'delta').iterdir()) == [
      'delta.json', 'delta.safetensors']
  merged = pc.write_merged(tmp_path / 'delta', tmp_path / 'full.safetensors')
  with np.load(lora_run / 'merged.npz') as f:
    want = {k: f[k] for k in f.files}
  got = weights_lib.read_arrays(pathlib.Path(merged['merged']))
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _mlp():
  rng = np.random.default_rng(1)
  params = {'hidden': {'kernel': rng.normal(size=(5, 4)).astype(np.float32),
                       'bias': np.zeros(4, np.float32)},
            'output': {'kernel': rng.normal(size=(4, 3)).astype(np.float32),
                       'bias': np.zeros(3, np.float32)}}
  method = peft.Method('lora', ('hidden/kernel',), ('output/bias', 'output/kernel'), rank=2,
                       scale=0.5)
  trainable = jax.device_get(method.init_trainable(params, jax.random.key(0)))
  trainable['lora']['hidden/kernel']['b'] = rng.normal(size=(2, 4)).astype(np.float32)
  return params, method, trainable


def test_adapter_of_another_model_uses_our_names_and_saves_the_head(tmp_path):
  params, method, trainable = _mlp()
  weights_lib.write_weights(tmp_path / 'base.safetensors', params)
  base = peft_base.base_reference(str(tmp_path / 'base.safetensors'))
  pc.write_delta(tmp_path / 'ad', method, trainable, params, base, layout='peft')
  config = json.loads((tmp_path / 'ad' / 'adapter_config.json').read_text())
  assert (config['target_modules'], config['modules_to_save']) == (['hidden'], ['output'])
  assert config['lora_alpha'] == 1 and config['task_type'] is None
  adapter = weights_lib.read_arrays(tmp_path / 'ad' / 'adapter_model.safetensors')
  assert sorted(adapter) == ['base_model.model.hidden.lora_A.weight',
                             'base_model.model.hidden.lora_B.weight',
                             'base_model.model.output.bias', 'base_model.model.output.weight']
  np.testing.assert_array_equal(adapter['base_model.model.output.weight'],
                                trainable['head']['output/kernel'].T)
  want = method.merged_params(params, trainable)
  got, _ = pc.merge(tmp_path / 'ad')
  for (p, a), (_, b) in zip(tree_lib.leaves_with_paths(got), tree_lib.leaves_with_paths(want)):
    np.testing.assert_array_equal(a, b, err_msg=p)
  # PEFT saves whole modules: half a head module is refused, naming the leaf
  half = peft.Method('lora', ('hidden/kernel',), ('output/kernel',), rank=2, scale=0.5)
  t = {**trainable, 'head': {'output/kernel': trainable['head']['output/kernel']}}
  with pytest.raises(pc.DeltaError, match="'output/bias'.*modules_to_save"):
    pc.write_delta(tmp_path / 'half', half, t, params, base, layout='peft')
  rows = peft.Method('row', ('hidden/kernel',), (), rows=((1,),))
  with pytest.raises(pc.DeltaError, match="holds LoRA; a 'row' delta"):
    pc.write_delta(tmp_path / 'rows', rows, {}, params, base, layout='peft')


# --- errors: one line, exit 2 --------------------------------------------------------------

def _fake_run(path, model='mlp', peft_kind=None):
  path.mkdir(parents=True, exist_ok=True)
  (path / 'config.json').write_text(json.dumps({'config': {
      'model': {'name': model, 'options': {}}, 'finetune': {'init_from': 'x.npz'}}}))
  if peft_kind:
    (path / 'peft.json').write_text(json.dumps({'kind': peft_kind, 'targets': []}))
  return str(path)


@pytest.mark.parametrize('args, match', [
    (lambda t: ['export', _fake_run(t / 'r'), '--hf', str(t / 'hf')],
     "--hf writes Llama-family models .* of model 'mlp'"),
    (lambda t: ['export', _fake_run(t / 'r', 'llama'), '--hf', str(t / 'hf')],
     'without model.options.pretrained'),
    (lambda t: ['export', _fake_run(t / 'r', peft_kind='row'), '--peft-delta', '--layout',
                'peft'], "'row' run: the PEFT library's adapter layout holds LoRA only"),
    (lambda t: ['export', _fake_run(t / 'r'), '--layout', 'peft'],
     '--layout applies to --peft-delta'),
    (lambda t: ['export', _fake_run(t / 'r'), '--hf', str(t / 'hf'), '--format', 'csr'],
     '--format does not apply'),
    (lambda t: ['merge', str(t), '--out', str(t / 'm.npz')], 'PEFT adapter without'),
])
def test_bad_requests_are_one_line_and_exit_2(tmp_path, capsys, args, match):
  import re
  (tmp_path / 'adapter_config.json').write_text('{}')   # an adapter from another tool
  assert cli.main(args(tmp_path)) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('sparsejax: ') and re.search(match, err[0]), err
  assert not (tmp_path / 'hf').exists()
