"""The try-it page at ``/``, in headless Chromium against a real server serving a cnn16
trained on food16: photos in through the file inputs, labels and the answering model out,
every refusal a sentence, usable by keyboard and at phone width."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from browser import DESKTOP, PHONE, open_page, screenshot
from helpers import FOOD16
from serving import MODEL, ServerProcess

pytestmark = pytest.mark.slow
KEY = "pAgE-kEy-4b1e"
TOP = ".top li:first-child .label"
# Chromium logs each 4xx answer to fetch() as a console error; these tests ask for them.
ASKED_FOR = re.compile(r"^Failed to load resource: the server responded with a status of (401|413|415)")


@pytest.fixture(scope="module")
def server(food16_model, tmp_path_factory):
    root, uri = food16_model
    overrides = [f"model_uri=models:/{MODEL}@candidate", f"logger.tracking_uri={uri}", "serve.max_body_mb=0.5"]
    env = {"LETTUCIFY_API_KEY": KEY, "LETTUCIFY_DEPLOYMENT": "green"}
    with ServerProcess(overrides, tmp_path_factory.mktemp("page"), env=env, api_key=KEY) as running:
        yield running


@pytest.fixture(scope="module")
def right(server) -> Dict[Path, str]:
    """Three food16 test photos of different classes that the served model labels right."""
    found: Dict[Path, str] = {}
    for path in sorted((FOOD16 / "test").rglob("*.jpg")):
        if path.parent.name in found.values():
            continue
        answer = server.post("/predict", files={"file": path.read_bytes()}).json()
        if answer["predictions"][0]["label"] == path.parent.name:
            found[path] = path.parent.name
        if len(found) == 3:
            return found
    pytest.fail(f"the served model labels fewer than 3 classes' photos right: {found}")


def opened(browser, server, size=DESKTOP, key: str = KEY):
    page, problems = open_page(browser, server.url + "/", size)
    if key:
        page.click("#key-box summary")
        page.fill("#key", key)
    return page, problems


def results(page, count: int) -> List[Dict[str, str]]:
    """The first ``count`` results once each has its answer or its error."""
    page.wait_for_function(
        "n => [...document.querySelectorAll('.result')].filter(r => r.querySelector('.top li') || r.classList.contains('failed')).length >= n",
        arg=count, timeout=30_000,
    )
    return page.eval_on_selector_all(".result", """items => items.map(r => ({
        title: r.querySelector('.title').textContent,
        top: r.querySelector('.top li:first-child .label')?.textContent ?? null,
        bars: r.querySelectorAll('.top li').length,
        model: r.querySelector('.model').textContent,
        error: r.querySelector('.error').hidden ? null : r.querySelector('.error').textContent,
        again: !r.querySelector('.again').hidden,
        thumb: r.querySelector('.thumb').naturalWidth,
    }))""")


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.parametrize("size, picker, name", [(PHONE, "#camera", "page-phone.png"), (DESKTOP, "#files", "page-desktop.png")])
def test_a_food16_photo_gets_its_label_at_the_top_with_the_model_that_answered(browser, server, right, size, picker, name):
    photo, label = next(iter(right.items()))
    page, problems = opened(browser, server, size)
    assert page.get_attribute("#camera", "capture") == "environment"
    assert page.get_attribute("#camera", "accept") == page.get_attribute("#files", "accept") == "image/*"
    page.set_input_files(picker, str(photo))
    (result,) = results(page, 1)
    assert result["title"] == photo.name and result["top"] == label and result["bars"] == 5
    assert result["thumb"] > 0 and result["error"] is None
    assert re.fullmatch(rf"{MODEL} version 1 @candidate · green · \d+ ms", result["model"]), result["model"]
    assert page.text_content("#announce").startswith(f"{photo.name}: {label}, ")
    assert page.get_attribute("#announce", "aria-live") == "polite"
    assert no_horizontal_scroll(page)
    assert screenshot(page, name).stat().st_size > 10_000
    assert problems.all() == []


def test_several_photos_give_one_result_each_in_the_order_chosen(browser, server, right):
    page, problems = opened(browser, server)
    page.set_input_files("#files", [str(path) for path in right])
    answers = results(page, len(right))
    assert [(a["title"], a["top"], a["bars"]) for a in answers] == [(p.name, label, 5) for p, label in right.items()]
    assert problems.all() == []


def test_a_too_large_file_and_a_text_file_get_sentences_not_json(browser, server, tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8)).save(big, quality=95)
    assert big.stat().st_size > 0.5 * (1 << 20)
    notes = tmp_path / "notes.txt"
    notes.write_text("milk, eggs, lettuce")
    page, problems = opened(browser, server, PHONE)
    page.set_input_files("#files", [str(big), str(notes)])
    too_large, not_image = results(page, 2)
    assert too_large["error"].startswith("Too large: big.jpg (")
    assert not_image["error"].startswith("Not an image this server reads")
    for shown in (too_large, not_image):
        assert shown["again"] and shown["top"] is None and "{" not in shown["error"]
    assert no_horizontal_scroll(page)
    assert [e for e in problems.console_errors if not ASKED_FOR.match(e)] == []
    assert problems.page_errors == problems.failed_loads == []


def test_a_wrong_key_says_not_authorised_and_the_right_one_kept_for_the_tab_then_works(browser, server, right):
    photo, label = next(iter(right.items()))
    page, problems = opened(browser, server, key="not-" + KEY)
    page.set_input_files("#files", str(photo))
    (refused,) = results(page, 1)
    assert refused["error"].startswith("Not authorised: the API key is wrong")
    assert page.evaluate("document.activeElement.id") == "key"
    page.fill("#key", KEY)
    page.get_by_role("button", name="Try again").click()
    page.wait_for_selector(".top li")
    assert results(page, 1)[0]["top"] == label
    page.reload()
    assert page.input_value("#key") == KEY  # kept for the session ...
    assert open_page(browser, server.url + "/")[0].evaluate("sessionStorage.length") == 0  # ... of this tab only
    assert [e for e in problems.console_errors if not ASKED_FOR.match(e)] == []


def test_every_control_has_a_label_and_is_reached_by_keyboard_with_a_visible_focus(browser, server):
    page, problems = opened(browser, server, PHONE, key="")
    unlabelled = page.evaluate("[...document.querySelectorAll('input')].filter(i => !i.labels.length).map(i => i.id)")
    assert unlabelled == []
    reached = []
    for _ in range(3):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(
            "(() => { const e = document.activeElement, s = getComputedStyle(e);"
            " return [e.id || e.tagName.toLowerCase(), s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0]; })()"))
    assert reached == [["camera", True], ["files", True], ["summary", True]]
    page.keyboard.press("Enter")  # on the summary: opens the key field, next in the tab order
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key"
    assert no_horizontal_scroll(page)
    assert problems.all() == []
