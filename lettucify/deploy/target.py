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
from typing import Dict, Mapping, Optional, Protocol

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
        """Split live traffic (percent per colour, summing to 100) and mirroring (percent, one colour at most)."""

    def remove(self, colour: str) -> None:
        """Take the colour's deployment down; it must have no live traffic."""

    def stop(self) -> None:
        """Take the whole deployment down (deploy.action=stop)."""
