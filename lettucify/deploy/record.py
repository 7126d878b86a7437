"""Where each version is deployed, on the registry: tags on the model versions and an alias.

After every traffic change, each version on a colour of target T gets the tags
``lettucify.deploy.<T>.colour`` and ``lettucify.deploy.<T>.traffic`` (percent), a version
no longer there loses them, and the alias (``deploy.live_alias``) follows the version with
the most live traffic. The target keeps the same facts where it keeps its state (its
state file, the endpoint's traffic map, the HTTPRoute); the registry's copy lets anyone
with the store see what serves.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterable, Optional, Set

from lettucify.deploy.target import ColourState

log = logging.getLogger(__name__)


class RegistryRecord:
    def __init__(self, target: str, tracking_uri: Optional[str], alias: str, models: Iterable[str] = ()) -> None:
        self.colour_tag = f"lettucify.deploy.{target}.colour"
        self.traffic_tag = f"lettucify.deploy.{target}.traffic"
        self.tracking_uri = tracking_uri
        self.alias = alias
        self.models: Set[str] = set(models)  # names seen on a colour: their stale tags are cleared too

    def __call__(self, states: Dict[str, ColourState]) -> None:
        from lettucify.tracking.store import client

        registry = client(self.tracking_uri)
        placed = {(s.model, s.version): s for s in states.values() if s.model and s.version}
        self.models |= {name for name, _ in placed}
        for name in sorted(self.models):
            for version in registry.search_model_versions(f"name='{name}'"):
                state = placed.get((name, str(version.version)))
                if state is not None:
                    registry.set_model_version_tag(name, version.version, self.colour_tag, state.colour)
                    registry.set_model_version_tag(name, version.version, self.traffic_tag, str(state.traffic))
                elif self.colour_tag in version.tags:
                    registry.delete_model_version_tag(name, version.version, self.colour_tag)
                    registry.delete_model_version_tag(name, version.version, self.traffic_tag)
        serving = [s for s in placed.values() if s.traffic > 0]
        if serving:
            live = max(serving, key=lambda s: s.traffic)
            registry.set_registered_model_alias(live.model, self.alias, live.version)
        log.debug("deploy: recorded %s on the registry", {c: (s.model, s.version, s.traffic) for c, s in states.items()})
