"""Each check of the endpoint suite (lettucify/deploy/smoke.py) as a test of its own."""

from __future__ import annotations

import pytest

from lettucify.deploy.smoke import CHECKS, run_check


@pytest.mark.parametrize("check", CHECKS)
def test_the_deployment_answers(deployment, check):
    problem = run_check(check, deployment)
    assert problem is None, problem
