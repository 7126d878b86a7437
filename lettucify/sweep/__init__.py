"""Sweeps that leave an answer.

- ``job``: what each job of a multirun returns (``optimized_metric`` of its task's
  metrics) and records in its folder (``result.json``), a failure included.
- ``summary``: every job's overrides and metrics, sorted by the objective, as CSV and
  Markdown, the best job as a command line, and the objective against each swept value.
- ``callback``: the Hydra callback that ties a sweep together: an MLflow parent run
  for the sweep (each job's run its child) and, at the end, the summary.

Any sweeper works with them: Hydra's basic one, or Optuna's (conf/hparams_search/, on
launchers/hydra_optuna_resume_sweeper, which resumes its stored study).

Importing this package imports no torch or mlflow.
"""
