"""The human-readable run report, `WORKDIR/report.md`."""

import os

from catdog_jax.dataset import CLASS_NAMES


def confusion_table(confusion: list[list[int]]) -> str:
  """Markdown confusion matrix: rows are true classes, columns predicted."""
  header = '| true \\ predicted | ' + ' | '.join(CLASS_NAMES) + ' |'
  rule = '|---|' + '---:|' * len(CLASS_NAMES)
  rows = [
    f'| {name} | ' + ' | '.join(str(n) for n in counts) + ' |'
    for name, counts in zip(CLASS_NAMES, confusion, strict=True)
  ]
  return '\n'.join([header, rule, *rows])


def splits_table(splits: dict[str, dict[str, int]]) -> str:
  """Markdown table of images per split and class."""
  header = '| split | ' + ' | '.join(CLASS_NAMES) + ' | total |'
  rule = '|---|' + '---:|' * (len(CLASS_NAMES) + 1)
  rows = [
    f'| {split} | '
    + ' | '.join(str(counts[c]) for c in CLASS_NAMES)
    + f' | {sum(counts.values())} |'
    for split, counts in splits.items()
  ]
  return '\n'.join([header, rule, *rows])


def render_report(test_metrics, classification_report, data_report, step):
  """The report as Markdown text."""
  auc = test_metrics['roc_auc']
  return '\n'.join(
    [
      '# catdog-jax run report',
      '',
      f'Model after {step} training steps, evaluated on the test split '
      f'({test_metrics["num_examples"]} images it never trained on).',
      '',
      '## Test metrics (dog = positive class)',
      '',
      f'- accuracy: {test_metrics["accuracy"]:.4f}',
      f'- precision: {test_metrics["precision"]:.4f}',
      f'- recall: {test_metrics["recall"]:.4f}',
      f'- F1: {test_metrics["f1"]:.4f}',
      f'- ROC AUC: {"n/a" if auc is None else f"{auc:.4f}"}',
      f'- log-loss: {test_metrics["log_loss"]:.4f}',
      '',
      '## Classification report',
      '',
      '```',
      classification_report.rstrip(),
      '```',
      '',
      '## Confusion matrix',
      '',
      confusion_table(test_metrics['confusion_matrix']),
      '',
      '## Data',
      '',
      f'{data_report["num_files"]} images under `{data_report["root"]}`, '
      f'split by {data_report["split_rule"]}.',
      '',
      splits_table(data_report['splits']),
      '',
    ]
  )


def write_report(
  workdir, *, test_metrics, classification_report, data_report, step
) -> str:
  """Writes `workdir/report.md` and returns its path."""
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write(
      render_report(test_metrics, classification_report, data_report, step)
    )
  return path
