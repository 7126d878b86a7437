"""Value checks of the composed config: what each schema field allows, checked before anything is made.

A field of the schema (lettucify/config.py) says what it allows in its metadata::

    epochs: int = field(default=20, metadata=at_least(1))

A subclass that only changes a field's default keeps its base's rule. ``validate`` walks
the composed config once: a key that is no field of its node's schema is refused (Hydra's
``+key=value`` gets past struct mode), a mandatory value left unset is refused, and every
other value is checked against its field's rule (null, an Optional field's "off", always
passes). ``ValidateConfig``, the Hydra callback conf/config.yaml registers, runs it before
Hydra makes the run folder and exits with status 2 and one line::

    trainer.epochs=-1: must be at least 1

Hydra's own composition errors (a key without ``+`` that no schema has, a value of the
wrong type, a group option that does not exist, an override that does not parse) are
put in the same one line by ``composition_error``::

    trainer.epohcs=3: unknown key, TrainerConf has no such field; did you mean trainer.epochs?
    model=cnn17: no such option; model is one of cnn16, efficientnet_lite0, efficientnet_lite2

Imports nothing heavy: lettucify.config imports it before Hydra starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from lettucify.errors import ConfigError

RULE = "lettucify.rule"

# A key relative to the checked field's node -> (its full key, its value).
Lookup = Callable[[str], Tuple[str, Any]]
# A bound: a number, or the key of another field of the same node ("nnodes").
Bound = Union[int, float, str, None]


@dataclasses.dataclass(frozen=True)
class Rule:
    allows: Callable[[Any, Lookup], bool]
    describe: Callable[[Lookup], str]  # what is allowed, after "must be"


def in_range(
    low: Bound = None, high: Bound = None, *, lower_open: bool = False, upper_open: bool = False
) -> Dict[str, Rule]:
    """A number in [low, high], either end open or absent: ``in_range(0, "nnodes", upper_open=True)``."""

    def value(bound: Bound, lookup: Lookup) -> Any:
        return lookup(bound)[1] if isinstance(bound, str) else bound

    def allows(x: Any, lookup: Lookup) -> bool:
        lo, hi = value(low, lookup), value(high, lookup)
        above = lo is None or x > lo or (x == lo and not lower_open)
        below = hi is None or x < hi or (x == hi and not upper_open)
        return above and below

    def describe(lookup: Lookup) -> str:
        lo, hi = ("=".join(map(str, lookup(b))) if isinstance(b, str) else b for b in (low, high))
        if hi is None:
            return f"{'greater than' if lower_open else 'at least'} {lo}"
        if lo is None:
            return f"{'below' if upper_open else 'at most'} {hi}"
        return f"in {'(' if lower_open else '['}{lo}, {hi}{')' if upper_open else ']'}"

    return {RULE: Rule(allows, describe)}


def at_least(low: Bound) -> Dict[str, Rule]:
    return in_range(low)


def greater_than(low: Bound) -> Dict[str, Rule]:
    return in_range(low, lower_open=True)


def off_or_at_least(low: int) -> Dict[str, Rule]:
    """0 (off), or a number of at least ``low``: ``data.cv_folds``."""
    return {RULE: Rule(lambda x, _: x == 0 or x >= low, lambda _: f"0 (off) or at least {low}")}


def one_of(*choices: str) -> Dict[str, Rule]:
    return {RULE: Rule(lambda x, _: x in choices, lambda _: f"one of {', '.join(choices)}")}


def matches(pattern: str, allowed: str) -> Dict[str, Rule]:
    """A string matching ``pattern`` whole; ``allowed`` says which in words ("cpu, cuda or cuda:N")."""
    return {RULE: Rule(lambda x, _: re.fullmatch(pattern, x) is not None, lambda _: allowed)}


def each(
    item: Optional[Dict[str, Rule]] = None, *, length: Optional[int] = None, increasing: bool = False
) -> Dict[str, Rule]:
    """A list of ``length`` numbers (one or more when None), each allowed by ``item``,
    smallest first if ``increasing``."""
    inner = item[RULE] if item else None

    def allows(values: Any, lookup: Lookup) -> bool:
        return (
            (len(values) == length if length else len(values) > 0)
            and (inner is None or all(inner.allows(v, lookup) for v in values))
            and (not increasing or list(values) == sorted(values))
        )

    def describe(lookup: Lookup) -> str:
        text = f"{length} numbers" if length else "one or more numbers"
        if inner:
            text += f", each {inner.describe(lookup)}"
        return text + (", smallest first" if increasing else "")

    return {RULE: Rule(allows, describe)}


def _rule(schema: type, name: str) -> Optional[Rule]:
    for klass in schema.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and RULE in declared.metadata:
            return declared.metadata[RULE]
    return None


def _shown(key: str, value: Any) -> str:
    # Imported here: lettucify.tracking imports lettucify.config, which imports this module.
    from lettucify.tracking.secrets import MASK, is_secret_key

    if is_secret_key(key):
        return MASK
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return str(value)


def _unknown_key(schema: type, key: str, prefix: str) -> str:
    close = difflib.get_close_matches(key, [f.name for f in dataclasses.fields(schema)], n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"unknown key, {schema.__name__} has no such field{hint}"


def one_line(err: BaseException) -> str:
    """Hydra's or OmegaConf's message, and its cause's, as one line."""
    parts = [_message(err)]
    if err.__cause__ is not None and str(err.__cause__) not in str(err):
        parts.append(_message(err.__cause__))
    return ": ".join(" ".join(part.split()) for part in parts)


def _message(err: BaseException) -> str:
    # After the message: OmegaConf's report of the key and its node's type (quoted in
    # Hydra's own messages too), and Hydra's list of where it looked.
    return re.split(r"\n\s*full_key:|\nConfig search path:", str(err))[0]


def composition_error(err: BaseException, overrides: Sequence[str]) -> str:
    """One line for an error Hydra raises as it composes the config with ``overrides`` (or
    any other of its errors meant to be shown without a trace): the override and what is
    wrong with it, where it can be told."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        close = difflib.get_close_matches(option, err.options, n=1)
        hint = f"; did you mean {group}={close[0]}?" if close else ""
        return f"{group}={option}: no such option; {group} is one of {', '.join(err.options)}{hint}"
    if isinstance(err, OverrideParseException):
        return f"{err.override}: {err.message.splitlines()[0]} (Hydra's override grammar)"
    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError, ValidationError)) and cause.full_key:
        key = cause.full_key
        # The override that set the key, or one below it (optimiser.lr=... for optimiser).
        typed = [o.lstrip("+~").partition("=") for o in overrides]
        shown = next((f"{name}={_shown(name, value)}" for name, eq, value in typed
                      if eq and (name == key or name.startswith(f"{key}."))), key)
        schema = cause.object_type
        if not isinstance(cause, ValidationError) and dataclasses.is_dataclass(schema):
            parent, _, name = key.rpartition(".")
            return f"{shown}: {_unknown_key(schema, name, f'{parent}.' if parent else '')}"
        return f"{shown}: {_message(cause).splitlines()[0]}"
    return one_line(err)


def _check(node: DictConfig, prefix: str, found: List[Tuple[str, str]]) -> None:
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return  # a plain mapping (data.download.members) takes any key
    names = [f.name for f in dataclasses.fields(schema)]

    def lookup(other: str) -> Tuple[str, Any]:
        return f"{prefix}{other}", OmegaConf.select(node, other)

    for key, raw in node.items_ex(resolve=False):
        full = f"{prefix}{key}"
        if key not in names:
            if full != "hydra":  # Hydra's own node, typed by Hydra's schema
                found.append((full, f"{full}={_shown(full, raw)}: {_unknown_key(schema, str(key), prefix)}"))
            continue
        if OmegaConf.is_missing(node, key):
            found.append((full, f"{full}=???: must be set"))
            continue
        if isinstance(raw, DictConfig):
            if node[key] is not None:
                _check(node[key], f"{full}.", found)
            continue
        rule = _rule(schema, key)
        if rule is None:
            continue
        try:
            value = node[key]  # resolved: ${.instance_count} is checked as the number it is
        except OmegaConfBaseException as err:
            found.append((full, f"{full}={raw}: {str(err).splitlines()[0]}"))
            continue
        if value is not None and not rule.allows(value, lookup):
            found.append((full, f"{full}={_shown(full, value)}: must be {rule.describe(lookup)}"))


def _overrides(cfg: DictConfig) -> List[str]:
    """The command line's overrides, unresolved: ``trainer.epochs=${oc.env:EPOCHS}`` as typed."""
    overrides = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
    return [] if overrides is None else OmegaConf.to_container(overrides, resolve=False)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError, one line, for the first problem of the composed ``cfg``.

    A key set on the command line is blamed before one that follows from it
    (compute.instance_count=0, not compute.nnodes=${.instance_count}).
    """
    found: List[Tuple[str, str]] = []
    _check(cfg, "", found)
    if not found:
        return
    typed = {o.split("=", 1)[0].lstrip("+~") for o in _overrides(cfg)}
    raise ConfigError(next((line for key, line in found if key in typed), found[0][1]))


def _exit_if_invalid(config: DictConfig, *more: DictConfig) -> None:
    # Hydra sets its own config only as the job starts; hydra: interpolations need it.
    HydraConfig.instance().set_config(config)
    try:
        for cfg in (config, *more):
            validate(cfg)
    except ConfigError as err:
        # Hydra turns a callback's exceptions into warnings and goes on: only an exit stops it.
        print(err, file=sys.stderr)
        raise SystemExit(2) from None


def _basic_sweep_points(config: DictConfig) -> List[DictConfig]:
    """The config of every point when Hydra's basic sweeper runs the sweep, composed as it will.

    Hydra composes a point only as it launches it, after the points before it have run;
    other sweepers choose their points as they go, and are checked point by point.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if OmegaConf.select(config, "hydra.sweeper._target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return []
    loader = GlobalHydra.instance().config_loader()
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.params or {}).items()]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides([*params, *_overrides(config)])
    return [loader.load_sweep_config(config, point) for point in BasicSweeper.split_arguments(overrides, None)[0]]


def _check_search_keys(config: DictConfig) -> None:
    """Raise ConfigError for a key of ``hydra.sweeper.params`` that the composed config lacks:
    a sweeper that chooses its points as it goes (Optuna) would only find it at its first trial."""
    for key in config.hydra.sweeper.get("params") or {}:
        parent, _, name = str(key).rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if "/" in key or key.startswith(("+", "~")) or not dataclasses.is_dataclass(schema) or name in node:
            continue  # a group, an addition or a deletion, a plain mapping, or there
        unknown = _unknown_key(schema, name, f"{parent}." if parent else "")
        raise ConfigError(f"hydra.sweeper.params.{key}: {unknown}")


class ValidateConfig(Callback):
    """``validate`` where Hydra has composed the config and made nothing yet: before a run;
    before a sweep, its base config and (basic sweeper) every point; and as each sweep
    point's job starts, for the points no one could check before."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_if_invalid(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            points = _basic_sweep_points(config)
            if not points:
                _check_search_keys(config)
        except CompactHydraException as err:  # a point that does not compose, a search key that is not there
            print(composition_error(err, _overrides(config)), file=sys.stderr)
            raise SystemExit(2) from None
        _exit_if_invalid(config, *points)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            _exit_if_invalid(config)
