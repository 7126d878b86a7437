"""Reviewing configs: ``lettucify config show`` and ``lettucify config diff`` (lettucify/review/command.py).

``compose`` makes the job's config as ``python -m lettucify <overrides>`` would, resolved;
``sources`` reads what one side of a diff names (overrides, a run folder, an MLflow run);
``diff`` lists what differs, one ``key: old -> new`` line each, secrets masked.
Nothing here imports torch; mlflow only to read an MLflow run.
"""
