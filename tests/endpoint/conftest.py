"""The endpoint suite's options: which deployment to check, and with what.

    pytest tests/endpoint --endpoint-url=http://127.0.0.1:8080/predict --photo=apple.jpg --label=apple
    pytest tests/endpoint --endpoint-url=https://<endpoint>.<region>.inference.ml.azure.com/score \\
        --api-key-env=AZURE_ENDPOINT_KEY --header=azureml-model-deployment:green

Without --endpoint-url (the project's own test run) every check is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("lettucify endpoint")
    group.addoption("--endpoint-url", help="the deployment's scoring URL (.../predict or .../score)")
    group.addoption("--api-key-env", default="LETTUCIFY_API_KEY", help="the variable that holds its API key")
    group.addoption("--photo", help="a photo the model labels as --label (default: the first food16 test photo)")
    group.addoption("--label", help="the label --photo must get (default: the photo's class folder)")
    group.addoption("--header", action="append", default=[], help="NAME:VALUE sent with every request")
    group.addoption("--model-version", help="the model version the answers must report")


def _first_food16_photo() -> Path:
    root = Path(os.environ.get("LETTUCIFY_DATA_DIR", "data")) / "food16" / "test"
    photos = sorted(root.glob("*/*.jpg"))
    if not photos:
        pytest.exit(f"no --photo given and no food16 test photo under {root}: pass --photo and --label", 2)
    return photos[0]


@pytest.fixture(scope="session")
def deployment(request):
    from lettucify.deploy.smoke import Deployment, endpoint_of, parse_headers

    option = request.config.getoption
    url = option("--endpoint-url", default=None)
    if not url:
        pytest.skip("the endpoint suite needs --endpoint-url=<a deployment's scoring URL>")
    photo = Path(option("--photo")) if option("--photo") else _first_food16_photo()
    label = option("--label") or photo.parent.name
    return Deployment(endpoint_of(url, parse_headers(option("--header"))), photo, label,
                      os.environ.get(option("--api-key-env")) or None, option("--model-version"))
