"""The job's config as ``python -m lettucify <overrides>`` composes it, checked and resolved.

One function, ``job_config``, for ``lettucify config show``/``diff``, experiments/review.py
and the composition tests: Hydra's compose API on ``<root>/conf`` (experiments through
conf/config.yaml's search path, ``<root>/experiments``), the schema's value checks
(lettucify.validation), then every interpolation resolved.

What Hydra sets only as a job starts (``hydra.runtime.output_dir``, the run folder named
after the time) is unknown here, so what reads it stays the interpolation it is written
as: ``paths.output_dir: ${hydra:runtime.output_dir}``. Two compositions of the same
overrides are then the same config; any other value that cannot resolve is an error.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException, ValidationError

from lettucify.config import REPO_ROOT
from lettucify.errors import ConfigError
from lettucify.validation import composition_error, one_line, validate

# The nodes of Hydra's config that Hydra fills in as a job starts.
_RUNTIME_NODES = ("runtime", "job")
# Where conf/config.yaml's search path finds the experiments, below a checkout.
EXPERIMENTS = Path("experiments") / "experiment"


def experiment_names(root: Path = REPO_ROOT) -> list[str]:
    """The experiments of a checkout: ``experiment=<name>`` for each ``experiments/experiment/<name>.yaml``."""
    return sorted(path.stem for path in (Path(root) / EXPERIMENTS).glob("*.yaml"))


@contextmanager
def _rooted(root: Path) -> Iterator[None]:
    """``${lettucify_root:}`` names ``root`` while Hydra composes: conf/config.yaml's search
    path then finds the experiments beside that conf/ (another checkout's, at review)."""
    if root == REPO_ROOT:
        yield
        return
    OmegaConf.register_new_resolver("lettucify_root", lambda: str(root), replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("lettucify_root", lambda: str(REPO_ROOT), replace=True)


@contextmanager
def hydra_node(cfg: DictConfig) -> Iterator[None]:
    """Within the block, ``${hydra:...}`` reads ``cfg``'s Hydra node, its unset run-time values
    (``runtime.output_dir``) kept as the interpolation that names them; then as it was."""
    for name in _RUNTIME_NODES:
        node = cfg.hydra[name]
        for key in node:
            if OmegaConf.is_missing(node, key):
                try:
                    node[key] = f"\\${{hydra:{name}.{key}}}"
                except ValidationError:  # not a string (hydra.job.num): stays unset
                    pass
    setup_globals()  # Hydra's resolvers (hydra:, now:), as Hydra registers them before a job
    hydra = HydraConfig.instance()
    before = hydra.cfg
    hydra.set_config(cfg)
    try:
        yield
    finally:
        hydra.cfg = before


def _compose(overrides: Sequence[str], root: Path) -> DictConfig:
    """Raises ConfigError (one line) for an unknown option, a bad override or a key the schema lacks."""
    root = Path(root).resolve()
    GlobalHydra.instance().clear()
    try:
        with _rooted(root), initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(composition_error(err, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def resolved(cfg: DictConfig) -> Dict[str, Any]:
    """``cfg`` without its ``hydra`` node as plain data, every interpolation resolved.

    Raises ConfigError naming the key of a value left unset (``???``) or that does not resolve.
    """
    job = copy.deepcopy(cfg)
    with open_dict(job):
        job.pop("hydra", None)
    try:
        return OmegaConf.to_container(job, resolve=True, throw_on_missing=True, enum_to_str=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err)) from None


def job_config(overrides: Sequence[str] = (), root: Path = REPO_ROOT) -> Dict[str, Any]:
    """What ``python -m lettucify <overrides>`` would run with, from ``root``'s conf/ and experiments/.

    Raises ConfigError (one line) where that command would stop: an unknown option, a bad
    override, a key the schema lacks, a value outside what its key allows
    (lettucify.validation), or a value that is unset or does not resolve.
    """
    cfg = _compose(overrides, root)
    with hydra_node(cfg):
        validate(cfg)
        return resolved(cfg)
