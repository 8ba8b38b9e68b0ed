"""How true a run's time estimates were: each progress line's ETA against
the time the run then took to finish (its test evaluation).

  python main.py --config=configs/quick_cpu.py --workdir=W ... 2> W.log
  python benchmarks/eta_accuracy.py --log=W.log --workdir=W

Reads the progress lines' timestamps from the log and their unrounded ETAs
from WORKDIR/metrics.jsonl. Prints one JSON line: per progress line, the
step, the ETA and the real time left in seconds, and the error as a share
of the real time left; and the largest error while a minute or more was
left (under a minute, "ETA 7 s" against 9 s reads as 20% off).
"""

import datetime
import json
import os
import re

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('log', None, "The run's stderr (absl's log lines).")
flags.DEFINE_string('workdir', None, 'The run.')
flags.mark_flags_as_required(['log', 'workdir'])

# absl's prefix: I1129 18:13:31.927808 <thread> file.py:line] message
_LINE = re.compile(r'^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+) \d+ \S+\] (.*)$')
_PROGRESS = re.compile(r'^step (\d+)/(\d+) ')
_TEST = re.compile(r'^Test at step \d+: ')


def timestamped_messages(lines):
  """(seconds since midnight, message) of each absl line (one day at most)."""
  for line in lines:
    match = _LINE.match(line)
    if match:
      clock = datetime.time.fromisoformat(match.group(2))
      seconds = clock.hour * 3600 + clock.minute * 60 + clock.second
      yield seconds + clock.microsecond / 1e6, match.group(3)


def eta_errors(messages, eta_minutes_by_step):
  """One row per progress line: its ETA against the real time left."""
  progress, end = [], None
  for seconds, message in messages:
    if match := _PROGRESS.match(message):
      progress.append((int(match.group(1)), seconds))
    elif _TEST.match(message):
      end = seconds
  if end is None:
    raise SystemExit('error: the log has no "Test at step" line: unfinished')
  rows = []
  for step, seconds in progress:
    if step in eta_minutes_by_step:
      eta, real = 60 * eta_minutes_by_step[step], end - seconds
      rows.append({'step': step, 'eta_s': round(eta, 1),
                   'real_s': round(real, 1),
                   'error': round((eta - real) / real, 3)})  # fmt: skip
  return rows


def main(argv):
  del argv
  with open(FLAGS.log) as f:
    messages = list(timestamped_messages(f))
  with open(os.path.join(FLAGS.workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  etas = {r['step']: r['eta_minutes'] for r in records if 'eta_minutes' in r}
  rows = eta_errors(messages, etas)
  worst = max(
    (row for row in rows if row['real_s'] >= 60),
    key=lambda row: abs(row['error']),
    default=None,  # A run shorter than a minute.
  )
  print(json.dumps({'lines': rows, 'worst': worst}))


if __name__ == '__main__':
  app.run(main)
