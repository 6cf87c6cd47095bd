"""results.csv from the table the second run printed (second_run.log): one
row per group with its columns as printed, test accuracy split into mean
and std (percent, rounded to 2 decimals as in the log) and n. The run's own
report.csv was written to /tmp and is gone; the log is the record.

  python experiments/sweep_resume_demo/results_from_log.py
"""

import csv
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
STATS = re.compile(r'^([\d.]+) ± ([\d.]+) \(n=(\d+)\)$')


def main():
  lines = [l.strip() for l in (HERE / 'second_run.log').read_text().splitlines()
           if l.strip().startswith('|')]
  header = [c.strip() for c in lines[0].strip('|').split('|')]
  out = []
  for line in lines[2:]:
    cells = dict(zip(header, (c.strip() for c in line.strip('|').split('|'))))
    acc = cells.pop('test_accuracy')
    m = STATS.match(acc)
    row = {k: ('' if v == '-' else v) for k, v in cells.items()}
    if m:
      row.update(test_accuracy_pct_mean=m.group(1), test_accuracy_pct_std=m.group(2),
                 n=m.group(3), status='ok')
    else:
      row.update(test_accuracy_pct_mean='', test_accuracy_pct_std='', n='', status=acc)
    out.append(row)
  with open(HERE / 'results.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(out[0]))
    writer.writeheader()
    writer.writerows(out)


if __name__ == '__main__':
  main()
