"""OptunaResumeSweeper: before Optuna's sweep runs, settle what an interrupted one left.

Hydra imports this module whenever it scans for plugins: optuna is imported when the
sweeper is made for a sweep, as hydra-optuna-sweeper itself does.
"""

import logging
from pathlib import Path
from typing import Any, List, Optional, Tuple

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


# A trial that an interruption left running: failed, and asked again as a new trial.
INTERRUPTED = "interrupted"


class OptunaResumeSweeper(OptunaSweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Optional[Any],
        study_name: Optional[str],
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: Optional[str],
        params: Optional[DictConfig],
    ) -> None:
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

        # Hydra 1.3 instantiates a plugin's config recursively, so the sampler arrives built;
        # hydra-optuna-sweeper's own __init__ expects its config, as Hydra 1.4 passes it.
        if isinstance(sampler, (DictConfig, dict)):
            sampler = instantiate(sampler)
        self.sweeper = OptunaSweeperImpl(sampler, direction, storage, study_name, n_trials, n_jobs,
                                         max_failure_rate, custom_search_space, params)

    def sweep(self, arguments: List[str]) -> None:
        impl = self.sweeper
        # As Hydra's basic sweeper does; a storage may be a file in it (sqlite:///<sweep dir>/optuna.db).
        Path(impl.sweep_dir).mkdir(parents=True, exist_ok=True)
        if impl.storage is not None:
            finished, retried = resume_study(impl.storage, impl.study_name)
            # The study's trials count towards n_trials; job numbers go on from the finished ones,
            # so that a retried trial gets the folder its interrupted job had.
            impl.n_trials = max(0, impl.n_trials - finished)
            impl.job_idx = finished
            if finished or retried:
                # Reseeded, or a seeded sampler would draw the first trials' values again.
                impl.sampler.reseed_rng()
                log.info("Optuna: resuming study %s: %d trials ended, %d interrupted ones asked again, %d to go",
                         impl.study_name, finished, retried, impl.n_trials)
        return super().sweep(arguments)


def resume_study(url: str, study_name: str) -> Tuple[int, int]:
    """(trials that ended, interrupted trials asked again) of the stored study, if there is one."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.get_storage(url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:  # no such study yet: a new sweep
        return 0, 0
    trials = storage.get_all_trials(study_id, deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    study = optuna.load_study(study_name=study_name, storage=storage)
    for trial in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    ended = [t for t in trials if t.state.is_finished() and not t.user_attrs.get(INTERRUPTED)]
    return len(ended), len(running)
