"""hydra/sweeper=optuna_resume: Hydra's Optuna sweeper, resuming its stored study."""
