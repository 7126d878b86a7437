"""What differs between two configs (or two recorded results), one ``key: old -> new`` line each.

Both trees are flattened to dotted keys (lists as one value) and masked first
(lettucify.tracking.secrets), so a secret is never shown; a change of a secret's value
is then no difference either.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping

import yaml

from lettucify.tracking.secrets import Masker, flatten

ABSENT = "<absent>"
_NOTHING = object()


def masked(tree: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of a plain config tree with its secrets masked."""
    masker = Masker()
    masker.collect(tree)
    return masker.tree(tree)


def as_yaml(tree: Mapping[str, Any]) -> str:
    """The tree as YAML, keys sorted, secrets masked: what ``config show`` prints."""
    return yaml.safe_dump(masked(tree), sort_keys=True, default_flow_style=False, allow_unicode=True)


def _shown(value: Any) -> str:
    if value is _NOTHING:
        return ABSENT
    # Strings as they are, everything else as JSON writes it (null, true, 0.001); the empty
    # string quoted so that it is seen.
    return value if isinstance(value, str) and value else json.dumps(value)


def _flat(tree: Mapping[str, Any]) -> Dict[str, Any]:
    return flatten(masked(tree)) if tree else {}  # an empty tree has no keys, not one empty one


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """``key: old -> new`` for every key whose value differs, sorted by key; ``[]`` when none."""
    before, after = _flat(old), _flat(new)
    lines = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key, _NOTHING), after.get(key, _NOTHING)
        if a != b or type(a) is not type(b):
            lines.append(f"{key}: {_shown(a)} -> {_shown(b)}")
    return lines
