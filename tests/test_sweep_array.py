"""Sweeps on a cluster: `sweep --count` and `--list` size and explain a job
array, `--index` defaults to $SLURM_ARRAY_TASK_ID and says the valid range
when it is wrong, and points run by separate processes collect into the same
results as one process running the whole sweep. The last test submits
scripts/slurm_sweep.sbatch to a one-node SLURM it starts itself, where SLURM
is installed (Debian: apt-get install slurm-wlm munge)."""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from sparsejax import cli, sweep

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'scripts' / 'slurm_sweep.sbatch'

# Three points of five steps each: a job array's worth at the least cost.
TINY_SWEEP = '''
from sparsejax.config import load_config

def get_config():
  c = load_config({config!r})
  c.train.steps = 5
  c.train.eval_every = 5
  c.train.checkpoint_every = 5
  c.train.log_every = 5
  c.model.options = {{'hidden': 16}}
  return c

def get_sweep():
  for sparsity in (0.0, 0.5, 0.8):
    yield {{'sparsity': sparsity, 'pruning.schedule': 'oneshot', '_arm': 'oneshot'}}
'''


@pytest.fixture
def tiny(tmp_path):
  """A 3-point sweep config file in tmp_path, built on configs/mnist1d_mlp.py."""
  path = tmp_path / 'tiny_sweep.py'
  path.write_text(TINY_SWEEP.format(config=str(ROOT / 'configs' / 'mnist1d_mlp.py')))
  return path


def _sweep(config, workdir, *extra):
  return cli.main(['sweep', '--config', str(config), '--workdir', str(workdir), *extra])


def _rows(workdir):
  return [json.loads(line) for line in (workdir / 'results.jsonl').read_text().splitlines()]


def test_count_and_list(tiny, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv(sweep.ARRAY_TASK_ENV, '1')    # read only by runs, not by these
  workdir = tmp_path / 'w'
  assert _sweep(tiny, workdir, '--count') == 0
  assert capsys.readouterr().out == '3\n'
  assert _sweep(tiny, workdir, '--list') == 0
  lines = capsys.readouterr().out.splitlines()
  points, _ = sweep.load_sweep(tiny)
  assert [line.split('\t')[:3] for line in lines] == [
      [str(i), 'todo', sweep.point_name(p)] for i, p in enumerate(points)]
  assert lines[1].split('\t')[3] == '--config.sparsity=0.5 --config.pruning.schedule=oneshot'
  assert not workdir.exists()                      # they ran nothing, wrote nothing


@pytest.mark.parametrize('where, value, message', [
    ('env', '3', 'SLURM_ARRAY_TASK_ID=3 is out of range'),
    ('env', '-1', 'SLURM_ARRAY_TASK_ID=-1 is out of range'),
    ('env', 'two', "SLURM_ARRAY_TASK_ID='two' is not an integer"),
    ('flag', '7', '--index=7 is out of range'),
    ('flag', '1.5', "--index='1.5' is not an integer"),
])
def test_bad_index_is_one_line_with_the_range(where, value, message, tiny, tmp_path, capsys,
                                              monkeypatch):
  monkeypatch.delenv(sweep.ARRAY_TASK_ENV, raising=False)
  if where == 'env':
    monkeypatch.setenv(sweep.ARRAY_TASK_ENV, value)
  extra = ['--index', value] if where == 'flag' else []
  assert _sweep(tiny, tmp_path / 'w', *extra) == 2
  err = capsys.readouterr().err
  assert err == f'sparsejax: {message}; the sweep has 3 points, valid indices 0-2\n'
  assert not (tmp_path / 'w').exists()             # checked before anything ran


def test_index_does_not_go_with_reading(tiny, tmp_path, capsys):
  assert _sweep(tiny, tmp_path / 'w', '--index', '0', '--list') == 2
  assert capsys.readouterr().err.startswith('sparsejax: --index runs one point;')
  assert _sweep(tiny, tmp_path / 'none', '--collect') == 2
  assert 'does not exist' in capsys.readouterr().err


def test_explicit_index_wins_over_the_array_task():
  array_task = {sweep.ARRAY_TASK_ENV: '1'}
  assert sweep.point_index('2', 3, array_task) == 2
  assert sweep.point_index(None, 3, array_task) == 1
  assert sweep.point_index(None, 3, {sweep.ARRAY_TASK_ENV: ''}) is None
  assert sweep.point_index(None, 3, {}) is None      # run_sweep from Python: every point


def test_failed_point_fails_its_array_task(tiny, tmp_path, capsys, monkeypatch):
  """An array task whose point fails exits 1 (SLURM marks it FAILED); the
  failure is in results.jsonl with its error line."""
  monkeypatch.setattr(sweep, 'command', lambda *a, **k: [
      sys.executable, '-c', 'import sys; sys.exit("sparsejax: the point broke")'])
  monkeypatch.setenv(sweep.ARRAY_TASK_ENV, '2')
  assert _sweep(tiny, tmp_path / 'w') == 1
  rows = _rows(tmp_path / 'w')
  assert [r['status'] for r in rows] == ['failed'] * 3
  assert rows[2]['error'] == 'sparsejax: the point broke'
  assert rows[0]['error'] == 'not run yet'


def test_concurrent_collects_do_not_collide(tiny, tmp_path):
  """The tasks of an array collect into the same results.jsonl at once:
  every write is whole and no temporary file is left behind."""
  points, _ = sweep.load_sweep(tiny)
  errors = []

  def collect_many():
    try:
      for _ in range(20):
        sweep.collect(tmp_path, points)
    except Exception as e:       # noqa: BLE001  (reported by the assert below)
      errors.append(e)

  threads = [threading.Thread(target=collect_many) for _ in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []
  assert [r['index'] for r in _rows(tmp_path)] == [0, 1, 2]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      '.sweep.lock', 'results.jsonl', 'tiny_sweep.py']


@pytest.mark.slow
@pytest.mark.extended
def test_array_tasks_collect_like_one_sweep(tiny, tmp_path, capsys, monkeypatch):
  """Point 0 as an array task (SLURM_ARRAY_TASK_ID set, no --index), then
  points 1 and 2 at the same time (--index, two threads: their trainings are
  separate processes, their collects overlap). The last collect holds every
  point; `sparsejax report` reads all three, and a whole-sweep run (every
  point found finished) and `--collect` write the very same results.jsonl."""
  workdir = tmp_path / 'w'
  monkeypatch.setenv(sweep.ARRAY_TASK_ENV, '0')
  assert _sweep(tiny, workdir) == 0, capsys.readouterr()
  assert 'point 0 ' in capsys.readouterr().out
  assert [r['status'] for r in _rows(workdir)] == ['ok', 'failed', 'failed']
  monkeypatch.delenv(sweep.ARRAY_TASK_ENV)
  codes = {}
  tasks = [threading.Thread(target=lambda i=i: codes.update({i: _sweep(tiny, workdir,
                                                                       '--index', str(i))}))
           for i in (1, 2)]
  for t in tasks:
    t.start()
  for t in tasks:
    t.join()
  assert codes == {1: 0, 2: 0}, capsys.readouterr()
  by_tasks = (workdir / 'results.jsonl').read_bytes()
  assert [r['status'] for r in _rows(workdir)] == ['ok'] * 3
  capsys.readouterr()
  assert cli.main(['report', str(workdir)]) == 0
  table = capsys.readouterr().out
  for sparsity in ('0.0', '0.5', '0.8'):
    assert re.search(rf'\| oneshot +\| oneshot +\| {sparsity} +\| [\d.]+ \(n=1\)', table), table
  assert _sweep(tiny, workdir) == 0                # the whole sweep: nothing left to run
  assert capsys.readouterr().out.count(' skipped ') == 3
  assert (workdir / 'results.jsonl').read_bytes() == by_tasks
  assert _sweep(tiny, workdir, '--collect') == 0
  assert (workdir / 'results.jsonl').read_bytes() == by_tasks
  capsys.readouterr()
  assert _sweep(tiny, workdir, '--list') == 0
  assert [line.split('\t')[1] for line in capsys.readouterr().out.splitlines()] == ['done'] * 3


# --- a real SLURM: slurmctld, slurmd and munged started by the test ---

SLURM_CONF = '''\
ClusterName=sparsejaxtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=sjnode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=3 State=UNKNOWN
PartitionName=test Nodes=sjnode Default=YES MaxTime=INFINITE State=UP
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _last_line(path: pathlib.Path) -> str:
  lines = path.read_text(errors='replace').splitlines() if path.exists() else []
  return lines[-1] if lines else f'({path.name} is empty or missing)'


def _wait(check, seconds: float) -> bool:
  deadline = time.time() + seconds
  while time.time() < deadline:
    if check():
      return True
    time.sleep(0.5)
  return False


def _start(argv, log: pathlib.Path, procs: list, ready, what: str, seconds=30):
  """Starts a daemon in the foreground (so this test owns its process) and
  waits until `ready()`; skips with the command and its last log line if it
  does not get there."""
  with open(log.with_suffix('.stderr'), 'w') as stderr:
    procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr))
  if not _wait(lambda: ready() or procs[-1].poll() is not None, seconds) or not ready():
    code = procs[-1].poll()
    outcome = f'exited {code}' if code is not None else f'was not ready after {seconds} s'
    pytest.skip(f'SLURM could not start here: `{" ".join(map(str, argv))}` ({what}) '
                f'{outcome}; log: {_last_line(log)}; '
                f'stderr: {_last_line(log.with_suffix(".stderr"))}')


@pytest.fixture
def slurm(tmp_path_factory):
  """A one-node SLURM cluster on localhost, with its own munge key, socket,
  ports and state, so it leaves any site's SLURM alone. Yields the
  environment (SLURM_CONF set) for sbatch and squeue."""
  tools = {t: shutil.which(t) for t in ('sbatch', 'scontrol', 'slurmctld', 'slurmd', 'munged')}
  missing = [t for t, where in tools.items() if where is None]
  if missing:
    pytest.skip(f'no SLURM here: {", ".join(missing)} not on PATH '
                '(Debian: apt-get install slurm-wlm munge)')
  if os.geteuid() != 0:
    pytest.skip('the test starts its own slurmd, which launches jobs as their user: '
                'it runs as root only (as in a CI container)')
  d = tmp_path_factory.mktemp('slurm')
  for sub in ('state', 'spool'):
    (d / sub).mkdir()
  key = d / 'munge.key'
  key.write_bytes(os.urandom(1024))
  key.chmod(0o600)
  conf = d / 'slurm.conf'
  conf.write_text(SLURM_CONF.format(d=d, ctld_port=_free_port(), slurmd_port=_free_port()))
  env = {**os.environ, 'SLURM_CONF': str(conf)}
  env.pop(sweep.ARRAY_TASK_ENV, None)
  procs = []

  def answers():
    return subprocess.run([tools['scontrol'], 'ping'], env=env, capture_output=True,
                          text=True).stdout.count('is UP') > 0

  def node_idle():
    out = subprocess.run([tools['scontrol'], 'show', 'node', 'sjnode'], env=env,
                         capture_output=True, text=True).stdout
    return 'State=IDLE' in out

  try:
    _start([tools['munged'], '--foreground', '--force', f'--socket={d}/munge.sock',
            f'--key-file={key}', f'--log-file={d}/munged.log', f'--pid-file={d}/munged.pid',
            f'--seed-file={d}/munged.seed'], d / 'munged.log', procs,
           lambda: (d / 'munge.sock').exists(), 'munged')
    _start([tools['slurmctld'], '-D', '-f', str(conf)], d / 'slurmctld.log', procs, answers,
           'slurmctld')
    _start([tools['slurmd'], '-D', '-f', str(conf), '-N', 'sjnode'], d / 'slurmd.log', procs,
           node_idle, 'slurmd')
    yield env
  finally:
    for proc in reversed(procs):     # the daemons this fixture started, by their own handles
      proc.terminate()
      try:
        proc.wait(timeout=15)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _job_state(env, job: str) -> str:
  out = subprocess.run(['scontrol', '-o', 'show', 'job', job], env=env, capture_output=True,
                       text=True).stdout
  states = re.findall(r'JobState=(\S+)', out)
  return ','.join(states) if states else 'GONE'


@pytest.mark.skipif(os.environ.get('SPARSEJAX_SLURM_TEST') != '1',
                    reason='a real SLURM job array (about 30-60 s): SPARSEJAX_SLURM_TEST=1; '
                    '.ci/run runs it after the suite')
@pytest.mark.skipif(shutil.which('sbatch') is None,
                    reason='sbatch is not on PATH: no SLURM here '
                    '(Debian: apt-get install slurm-wlm munge)')
def test_slurm_job_array_runs_and_collects(slurm, tiny, tmp_path):
  """scripts/slurm_sweep.sbatch, as the README says to run it: a 3-task
  array (one point each, by SLURM_ARRAY_TASK_ID) and the collect job after
  it, on a real slurmctld and slurmd."""
  env = dict(slurm)
  env['PATH'] = os.pathsep.join((str(pathlib.Path(sys.executable).parent), env['PATH']))
  if not (pathlib.Path(sys.executable).parent / 'sparsejax').exists():   # not pip-installed
    env['SPARSEJAX'] = f'{sys.executable} -m sparsejax.cli'
  env['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), env.get('PYTHONPATH', '')) if p)
  workdir = tmp_path / 'w'
  submit = subprocess.run(['bash', str(SCRIPT), str(tiny), str(workdir)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert submit.returncode == 0, submit.stderr
  m = re.search(r'array job (\d+): 3 points; collect job (\d+)', submit.stdout)
  assert m, submit.stdout
  array, collect = m.groups()
  done = _wait(lambda: _job_state(env, collect) in ('COMPLETED', 'FAILED', 'CANCELLED',
                                                     'GONE'), 240)
  logs = '\n'.join(f'{p.name}: {p.read_text()[-1500:]}' for p in sorted(workdir.glob('*.out')))
  assert done, f'collect job {collect}: {_job_state(env, collect)}\n{logs}'
  assert _job_state(env, collect) == 'COMPLETED', logs
  assert _job_state(env, array) == ','.join(['COMPLETED'] * 3), logs
  assert sorted(p.name for p in workdir.glob('slurm-*.out')) == [
      f'slurm-{array}_{i}.out' for i in range(3)]
  rows = _rows(workdir)
  assert [(r['index'], r['status']) for r in rows] == [(0, 'ok'), (1, 'ok'), (2, 'ok')]
  assert [r['setting']['sparsity'] for r in rows] == [0.0, 0.5, 0.8]
  report = (workdir / 'report.md').read_text()
  assert report.count('(n=1)') == 3
