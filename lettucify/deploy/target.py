"""What the deploy flow asks of a target (local processes, an Azure ML online endpoint,
Kubernetes): put a model version on a colour, report readiness and state, split traffic.

A target is built from its config (``deploy.<target>``, through ``_target_``) with the
run folder to write into. The flow (``lettucify.deploy.flow``) never asks which target it
has: what a target cannot do (reach a deployment that was only rendered, read the
metrics of an Azure deployment) it says by returning None, and the flow skips that check
with a log line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Protocol, Tuple

from lettucify.errors import LettucifyError

COLOURS = ("blue", "green")


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


class DeployError(LettucifyError):
    """A step of the flow failed: ``step`` names it (ready, smoke, gate, traffic)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


# Mirrored copies a colour may get at most, percent (as Azure ML online endpoints allow).
MAX_MIRROR = 50


def traffic_split(traffic: Mapping[str, int], mirror: Mapping[str, int]) -> Tuple[Dict[str, int], Dict[str, int]]:
    """``(traffic, mirror)`` over every colour (one not named: 0), or DeployError("traffic")
    saying what is wrong: the rule of the local and Kubernetes targets (an Azure endpoint's
    maps are checked against Azure's own, ``lettucify.azure.online.check_traffic``).

    Live traffic is whole percents summing to 100; mirrored copies go to one colour at
    most, at most ``MAX_MIRROR`` percent, and not to a colour with live traffic.
    """
    unknown = sorted(set(traffic) - set(COLOURS)) + sorted(set(mirror) - set(COLOURS))
    if unknown:
        raise DeployError("traffic", f"no colour {unknown[0]!r}; the colours are {', '.join(COLOURS)}")
    split = {colour: traffic.get(colour, 0) for colour in COLOURS}
    copied = {colour: mirror.get(colour, 0) for colour in COLOURS}
    for what, shares in (("traffic", split), ("mirror", copied)):
        for colour, percent in shares.items():
            if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
                raise DeployError("traffic", f"{what} of {colour} must be a whole percent from 0 to 100, got {percent!r}")
    if sum(split.values()) != 100:
        raise DeployError("traffic", f"traffic must add up to 100, got {split}")
    mirrored = [colour for colour, percent in copied.items() if percent]
    if len(mirrored) > 1:
        raise DeployError("traffic", f"mirror {copied}: one colour at most")
    for colour in mirrored:
        if copied[colour] > MAX_MIRROR:
            raise DeployError("traffic", f"mirror of {colour} must be at most {MAX_MIRROR}%, got {copied[colour]}")
        if split[colour]:
            raise DeployError("traffic", f"{colour} has live traffic; only a colour without it can get mirrored copies")
    return split, copied


@dataclass(frozen=True)
class ModelRef:
    """A registered version: ``models:/<name>/<version>`` in the store at ``tracking_uri``."""

    name: str
    version: str
    tracking_uri: Optional[str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def download(self, folder: Path) -> Path:
        """The version's MLflow model folder (MLmodel, data/, code/), copied into ``folder``."""
        import mlflow

        from lettucify.tracking.store import client, resolve_tracking_uri

        source = client(self.tracking_uri).get_model_version_download_uri(self.name, self.version)
        folder.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(folder), tracking_uri=resolve_tracking_uri(self.tracking_uri)))


@dataclass(frozen=True)
class Endpoint:
    """Where a colour answers directly, bypassing the traffic split: its scoring URL (a
    /predict-style route), its base URL for /ready and /metrics (None when only the
    scoring route is reachable, as on Azure), and the headers that pick the colour."""

    scoring_url: str
    base_url: Optional[str] = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ColourState:
    colour: str
    model: Optional[str] = None  # registered model name; None: nothing on this colour
    version: Optional[str] = None
    traffic: int = 0  # percent of live traffic
    mirror: int = 0  # percent of live traffic copied to it, answers dropped
    health: str = "unknown"  # ready, not ready, down, unknown (not observable here)


class Target(Protocol):
    name: str

    def state(self) -> Dict[str, ColourState]:
        """Both colours, as the target has them now."""

    def put(self, colour: str, model: ModelRef) -> None:
        """Create or replace the colour's deployment with ``model``, with no live traffic."""

    def wait_ready(self, colour: str, timeout_s: float) -> None:
        """Return once the colour is ready; DeployError("ready", ...) after ``timeout_s``."""

    def direct(self, colour: str) -> Optional[Endpoint]:
        """The colour's own endpoint, or None when it cannot be reached from here (rendered only)."""

    def set_traffic(self, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        """Split live traffic and mirroring as ``traffic_split`` allows (a colour not named: 0)."""

    def remove(self, colour: str) -> None:
        """Take the colour's deployment down; it must have no live traffic."""

    def stop(self) -> None:
        """Take the whole deployment down (deploy.action=stop)."""
