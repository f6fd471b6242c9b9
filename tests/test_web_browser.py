"""The drawing page in a real browser: Debian's chromium, driven by Playwright.

Screenshots land in artifacts/ (gitignored): web_demo_desktop.png, web_demo_phone.png.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_classifier.demo.web import create_app
from mnist_classifier.reader import load_predictor

from .test_web_api import running_server

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}


def chromium_path() -> str:
    """Debian's chromium, installed here (as root, via apt-get) when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is missing and installing it needs root: run scripts/system_deps.sh")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                       check=True, timeout=900, env=env)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"could not install chromium with apt-get: {error}")
    return shutil.which("chromium") or pytest.skip("apt-get ran but chromium is still missing")


@pytest.fixture(scope="module")
def user_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web_browser") / "user"


@pytest.fixture(scope="module")
def base_url(honest_checkpoint, user_data):
    with running_server(create_app(load_predictor(honest_checkpoint), user_data=user_data)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, base_url, **context_options):
    """A fresh page on the demo; records every URL it asks for and every console error."""
    page = browser.new_context(**context_options).new_page()
    page.requested, page.errors = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(base_url + "/")
    playwright_api.expect(page.locator("#model")).to_contain_text("simple_cnn")
    return page


def draw(page, points: list[tuple[float, float]]) -> None:
    """One mouse stroke through points given as fractions of the canvas box."""
    box = page.locator("#pad").bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()


ONE = [(0.52, 0.15 + 0.7 * i / 20) for i in range(21)]
ZERO = [(0.5 + 0.22 * math.sin(2 * math.pi * i / 40), 0.5 - 0.33 * math.cos(2 * math.pi * i / 40))
        for i in range(43)]


def test_drawing_a_one_then_a_zero(browser, base_url):
    page = open_page(browser, base_url, viewport=DESKTOP)
    digit = page.locator("#digit")
    draw(page, ONE)  # the page predicts by itself when the stroke ends
    playwright_api.expect(digit).to_have_text("1")
    assert page.locator("#preview").get_attribute("src").startswith("data:image/png;base64,")
    assert page.locator("#bars li.top .name").inner_text() == "1"

    page.keyboard.press("c")
    playwright_api.expect(digit).to_have_attribute("data-state", "empty")
    assert page.locator("#preview").is_hidden() and page.locator("#bars li.top").count() == 0
    assert page.evaluate("""() => {  // every pixel of the pad is white again
        const pad = document.getElementById('pad');
        const pixels = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        return pixels.every(value => value === 255);
    }""")

    draw(page, ZERO)
    playwright_api.expect(digit).to_have_text("0")
    with page.expect_request("**/api/predict"):  # S asks again
        page.keyboard.press("s")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web_demo_desktop.png", full_page=True)
    assert all(url.startswith(base_url) for url in page.requested), page.requested  # works offline
    assert page.errors == []


CROSS = ([(0.25 + 0.5 * i / 20, 0.22 + 0.56 * i / 20) for i in range(21)],
         [(0.75 - 0.5 * i / 20, 0.22 + 0.56 * i / 20) for i in range(21)])


def test_a_digit_is_answered_and_an_x_is_not_a_digit(browser, base_url):
    page = open_page(browser, base_url, viewport=DESKTOP)
    digit, bars, spoken = page.locator("#digit"), page.locator("#bars"), page.locator("#spoken")
    # A screen reader hears the finished drawing's answer once: not each guess while drawing,
    # nor the timings (the whole result section was a live region: helper-64)
    assert page.locator("section.result").get_attribute("aria-live") is None
    page.evaluate("""() => {
        window.announced = [];
        new MutationObserver(() => window.announced.push(document.getElementById('spoken').textContent))
            .observe(document.getElementById('spoken'), {childList: true, characterData: true, subtree: true});
    }""")
    draw(page, ONE)
    playwright_api.expect(digit).to_have_text("1")
    playwright_api.expect(spoken).to_have_text(re.compile(r"^1, (?:\d+|≥99\.5)% sure$"))  # never 100% short of it
    playwright_api.expect(digit).not_to_have_attribute("data-state", "refused")
    assert page.evaluate("window.announced") == [spoken.inner_text()]
    page.keyboard.press("c")
    playwright_api.expect(spoken).to_have_text("cleared")  # not the last answer beside an empty pad
    for stroke in CROSS:
        draw(page, stroke)
    playwright_api.expect(digit).to_have_text("not a digit?")
    playwright_api.expect(spoken).to_have_text(re.compile(r"^not a digit, best guess \d, (?:\d+|≥99\.5)%$"))
    playwright_api.expect(digit).to_have_attribute("data-state", "refused")
    playwright_api.expect(page.locator("#confidence")).to_contain_text("best guess")
    playwright_api.expect(bars).to_have_class("bars refused")  # every bar greyed
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web_demo_not_a_digit.png", full_page=True)
    page.keyboard.press("c")  # clearing forgets the refusal too
    playwright_api.expect(bars).to_have_class("bars")
    assert page.errors == []


def test_phone_width_and_clear_button(browser, base_url):
    page = open_page(browser, base_url, **PHONE)
    box = page.locator("#pad").bounding_box()
    assert box["width"] <= PHONE["viewport"]["width"] and abs(box["width"] - box["height"]) < 2
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
    draw(page, ONE)
    playwright_api.expect(page.locator("#digit")).to_have_text("1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web_demo_phone.png", full_page=True)
    page.locator("#clear").click()
    playwright_api.expect(page.locator("#digit")).to_have_attribute("data-state", "empty")
    assert page.errors == []


@pytest.mark.parametrize("size", [(640, 360), (844, 390)])
def test_a_phone_turned_sideways_shows_the_whole_pad_its_buttons_and_the_answer(browser, base_url, size):
    width, height = size
    page = open_page(browser, base_url, **{**PHONE, "viewport": {"width": width, "height": height}})
    for element in ("#pad", "#clear", "#predict", "#digit"):
        box = page.locator(element).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, (element, box)
    pad = page.locator("#pad").bounding_box()
    assert abs(pad["width"] - pad["height"]) < 2 and pad["width"] >= 160
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    draw(page, ONE)
    playwright_api.expect(page.locator("#digit")).to_have_text("1")
    assert page.evaluate("window.scrollY") == 0 and page.errors == []


def test_page_says_digit_only_for_a_model_of_something_else(browser, small_checkpoint):
    from mnist_classifier.datasets import get_dataset_spec

    digits = load_predictor(small_checkpoint)
    names = list(get_dataset_spec("fashion-mnist").class_names)
    clothes = dataclasses.replace(digits, class_names=names, info={**digits.info, "dataset": "not-digits"})
    with running_server(create_app(clothes)) as url:
        page = open_page(browser, url, viewport=DESKTOP)
        playwright_api.expect(page.locator("#notice")).to_contain_text("digit-only")
        assert page.locator("#bars li .name").first.inner_text() == names[0]
        assert page.locator("#teach").is_hidden()  # served without a --user-data: no labelling
        # helper-86: nor does the footer offer the route that would refuse it
        assert page.locator("#examples-api").is_hidden()
        assert "POST /api/predict" in page.locator("footer").inner_text()
        # helper-86: names were cut to "Trou", "Coa" under the bars, and a phone scrolled sideways
        for options in ({"viewport": DESKTOP}, PHONE):
            page = open_page(browser, url, **options)
            draw(page, ONE)
            playwright_api.expect(page.locator("#digit")).not_to_have_attribute("data-state", "empty")
            clipped = page.evaluate("""() => [...document.querySelectorAll('#bars .name, #digit')]
                .filter(element => element.scrollWidth > element.clientWidth + 1).map(element => element.textContent)""")
            assert clipped == [], (options, clipped)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), options


def test_labelling_saves_the_drawing_and_undo_removes_it(browser, base_url, user_data):
    page = open_page(browser, base_url, viewport=DESKTOP)
    expect, saved = playwright_api.expect, page.locator("#saved")
    expect(saved).to_have_text("nothing saved yet")
    expect(page.locator("#model")).to_contain_text(".pth)")  # which file answers
    save_as_zero = page.get_by_role("button", name="save the drawing as 0")
    expect(save_as_zero).to_be_disabled()  # nothing answered yet, nothing to label

    draw(page, ONE)
    expect(page.locator("#digit")).to_have_text("1")
    page.keyboard.press("1")
    expect(saved).to_have_text("saved as 1: 1 example, 1 of 1")
    expect(page.locator("#digit")).to_have_attribute("data-state", "empty")  # the pad is ready for the next
    draw(page, ZERO)
    expect(page.locator("#digit")).to_have_text("0")
    save_as_zero.click()
    expect(saved).to_have_text("saved as 0: 2 examples, 1 of 0")
    assert [json.loads(line)["label"] for line in (user_data / "examples.jsonl").read_text().splitlines()] == [1, 0]

    page.keyboard.press("u")
    expect(saved).to_have_text("removed the 0 saved last: 1 example, 0 of 0")
    page.get_by_role("button", name="undo: remove the drawing saved last").click()
    expect(saved).to_have_text("removed the 1 saved last: 0 examples, 0 of 1")
    assert (user_data / "examples.jsonl").read_text() == ""
    page.keyboard.press("u")  # nothing left: said without a DELETE's 404 in the console (helper-50)
    expect(saved).to_have_text("nothing to undo")
    assert page.errors == [] and sum(url.endswith("/api/examples/last") for url in page.requested) == 2


def test_an_answer_is_taken_down_when_the_server_stops_answering(browser, base_url):
    page = open_page(browser, base_url, viewport=DESKTOP)
    draw(page, ONE)
    playwright_api.expect(page.locator("#digit")).to_have_text("1")
    page.route("**/api/predict", lambda route: route.abort())  # as if the server had been stopped
    draw(page, [(0.3, 0.5), (0.7, 0.5)])
    playwright_api.expect(page.locator("#status")).to_contain_text("no answer from the server")
    # not the 1 of the drawing before: nothing stands for an answer the model never gave
    playwright_api.expect(page.locator("#digit")).to_have_attribute("data-state", "empty")
    playwright_api.expect(page.locator("#confidence")).to_have_text("no answer")


def test_a_pending_answer_says_so_and_one_that_never_comes_is_named(browser, base_url):
    """helper-85: while an answer was on its way the page said "draw something" under a drawing,
    beside the last answer's timing; a server that hung left it so for ever."""
    page = open_page(browser, base_url, viewport=DESKTOP)
    draw(page, ONE)
    playwright_api.expect(page.locator("#digit")).to_have_text("1")
    held = []
    page.route("**/api/predict", lambda route: held.append(route))  # the request reaches a server that never answers
    page.keyboard.press("c")
    playwright_api.expect(page.locator("#status")).to_have_text("")  # the 1's timing went with it
    draw(page, ONE)
    playwright_api.expect(page.locator("#confidence")).to_have_text("answering…")
    playwright_api.expect(page.locator("#status")).to_contain_text("no answer from the server (none in 10 s)",
                                                                   timeout=15_000)
    playwright_api.expect(page.locator("#confidence")).to_have_text("no answer")
    assert held


def test_a_proxys_html_error_page_is_its_status_not_a_parse_error(browser, base_url):
    """helper-85: a reverse proxy's 502 page read as 'Unexpected token <' and 'is the server running?'"""
    page = open_page(browser, base_url, viewport=DESKTOP)
    page.route("**/api/predict", lambda route: route.fulfill(
        status=502, content_type="text/html", body="<html><body><h1>502 Bad Gateway</h1></body></html>"))
    draw(page, ONE)
    status = page.locator("#status")
    playwright_api.expect(status).to_contain_text("error 502")
    assert "JSON" not in status.inner_text() and "still running" not in status.inner_text()
    # helper-87: a sign-in page sent as a 200 was read as an answer, and failed in the page's own code
    page.unroute("**/api/predict")
    page.route("**/api/predict", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<html><body>sign in</body></html>"))
    page.keyboard.press("c")
    draw(page, ONE)
    playwright_api.expect(status).to_have_text("error 200: the server's answer is not JSON")
    playwright_api.expect(page.locator("#confidence")).to_have_text("no answer")
    assert [error for error in page.errors if "Failed to load resource" not in error] == []  # the 502s' own lines


def test_a_digit_drawn_small_with_the_wide_pen_is_refused_with_what_to_do(browser, base_url):
    """helper-85: a 2 drawn at a fifth of the pad came back as an 8, 97.5% sure."""
    from mnist_classifier.answer import TOO_BOLD_HINT

    from .test_preprocess import TWO

    page = open_page(browser, base_url, viewport=DESKTOP)
    draw(page, [(0.1 + 0.15 * u, 0.1 + 0.15 * v) for u, v in TWO])
    playwright_api.expect(page.locator("#digit")).to_have_text("not a digit?")
    playwright_api.expect(page.locator("#status")).to_contain_text(TOO_BOLD_HINT)
    playwright_api.expect(page.locator("#spoken")).to_contain_text(TOO_BOLD_HINT)
    page.keyboard.press("c")
    draw(page, [(0.2 + 0.6 * u, 0.1 + 0.8 * v) for u, v in TWO])  # the same 2, large
    playwright_api.expect(page.locator("#digit")).to_have_text("2")
    assert TOO_BOLD_HINT not in page.locator("#status").inner_text()
    assert page.errors == []


def test_keyboard_focus_is_visible_and_the_pad_is_named_for_screen_readers(browser, base_url):
    page = open_page(browser, base_url, viewport=DESKTOP)
    assert page.get_by_role("img", name="drawing canvas").count() == 1
    page.locator("#clear").focus()
    page.keyboard.press("Tab")  # focus by keyboard: :focus-visible applies
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineColor")
    behind = page.evaluate("""() => {  // the first opaque background around the button: what the ring is seen on
        for (let node = document.activeElement.parentElement; node; node = node.parentElement) {
            const colour = getComputedStyle(node).backgroundColor;
            if (colour !== "rgba(0, 0, 0, 0)" && colour !== "transparent") return colour;
        }
        return "rgb(255, 255, 255)";
    }""")
    assert contrast(ring, behind) >= 3.0, (ring, behind)  # WCAG 2.2's minimum for a focus indicator


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two CSS 'rgb(r, g, b)' colours."""
    def luminance(css: str) -> float:
        channels = [int(value) / 255 for value in css[css.index("(") + 1:css.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
