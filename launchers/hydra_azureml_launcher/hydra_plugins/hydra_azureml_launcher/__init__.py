"""Hydra launcher plugin: each sweep point an Azure ML command job (hydra/launcher=azureml),
or that same job run here (hydra/launcher=azureml_local)."""

__version__ = "0.1.0"
