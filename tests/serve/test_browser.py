"""The page of `hrpose serve` in a real browser: Debian's headless Chromium driven by Playwright's Python API.

Never `playwright install` (it downloads a browser): scripts/setup.sh installs Debian's `chromium` package and
this test FAILS, not skips, when /usr/bin/chromium is missing. A real photo is uploaded through the file input;
the test waits for the skeleton, checks the canvas pixels at the returned joints, the limbs, the hover
tooltip, the sliders, and that the JSON shown and downloaded is the API's answer for the same file; then the
webcam path with Chromium's fake camera. Screenshots go to $HRPOSE_SCREENSHOTS (or a tmp folder), printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA
from helpers import Server, multipart, request

CHROMIUM = Path("/usr/bin/chromium")
PHOTO = DATA / "samples" / "coco" / "000000000785.jpg"
JOINT_RGB = (0xFF, 0x2D, 0x95)  # the page's joint dots
LIMB_RGB = (0x00, 0xE5, 0xFF)  # the page's skeleton lines
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream"]  # fmt: skip


@pytest.fixture(scope="module")
def server(model_dir):  # noqa: F811
    s = Server(model_dir)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HRPOSE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the page: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(server):
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; scripts/setup.sh does it "
        "when run as root). Do not run `playwright install`."
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: errors.append(f"outside request: {r.url}")
                if not r.url.startswith((server.url, "blob:", "data:")) else None)  # fmt: skip
        page.goto(server.url + "/")
        page.wait_for_function("() => document.getElementById('model').textContent.includes('tiny')", timeout=10000)
        yield page
        # no script error, nothing loaded from outside the server (the 415 is test_bad_file's, on purpose)
        assert [e for e in errors if "status of 415" not in e] == [], errors
        browser.close()


def pixels(page, x: int, y: int, w: int, h: int) -> np.ndarray:
    js = (
        "([x, y, w, h]) => Array.from(document.getElementById('canvas').getContext('2d').getImageData(x, y, w, h).data)"
    )
    data = page.evaluate(js, [x, y, w, h])
    return np.asarray(data, dtype=np.uint8).reshape(h, w, 4)[..., :3]


def count_colour(page, rgb: tuple[int, int, int]) -> int:
    """Canvas pixels within 2 grey levels of `rgb` (counted in the page: 270k pixels are slow to transfer)."""
    js = """([r, g, b]) => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - r) <= 2 && Math.abs(d[i + 1] - g) <= 2 && Math.abs(d[i + 2] - b) <= 2) n++; }
        return n; }"""
    return int(page.evaluate(js, list(rgb)))


def set_slider(page, slider: str, value: float) -> None:
    page.eval_on_selector(f"#{slider}", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          str(value))  # fmt: skip


def api_answer(server, data: bytes, filename: str) -> dict:
    body, ctype = multipart({"image": (filename, data), "kpt_thr": (None, b"0")})
    status, _, raw = request(server, "POST", "/v1/pose", body, {"Content-Type": ctype})
    assert status == 200, raw
    return json.loads(raw)


def without_timings(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("timings_ms", "batch")}


def test_photo_upload_draws_the_skeleton_and_shows_the_apis_json(page, server, shots, tmp_path):
    page.set_input_files("#file", str(PHOTO))
    page.wait_for_selector("body[data-answers='1']", timeout=20000)
    shown = json.loads(page.text_content("#json"))
    want = api_answer(server, PHOTO.read_bytes(), PHOTO.name)
    assert without_timings(shown) == without_timings(want)
    assert shown["image"] == {"file": PHOTO.name, "width": 640, "height": 425}
    assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [640, 425]

    kpts = np.asarray(want["people"][0]["keypoints"]).reshape(-1, 3)
    set_slider(page, "kpt-thr", 0)
    # (an untrained model's joint scores may be negative: those stay hidden at 0)
    assert page.get_attribute("#canvas", "data-drawn-joints") == str(int((kpts[:, 2] >= 0).sum()))
    inside = [(x, y) for x, y, s in kpts if 2 <= x < 638 and 2 <= y < 423 and s >= 0]
    assert len(inside) >= 3, "the test needs joints inside the photo"
    for x, y in inside:  # a joint dot at every returned joint
        assert tuple(pixels(page, int(x), int(y), 1, 1)[0, 0]) == JOINT_RGB, (x, y)
    assert count_colour(page, LIMB_RGB) > 50  # skeleton lines drawn

    # the joint slider hides the joints scored below it (counted from the API's answer)
    thr = float(np.median(kpts[:, 2]))
    set_slider(page, "kpt-thr", thr)
    assert page.get_attribute("#canvas", "data-drawn-joints") == str(int((kpts[:, 2] >= thr).sum()))
    set_slider(page, "kpt-thr", 0)
    # the person slider: the whole-image box scores 1.0, so 1.0 keeps it, nothing above it exists
    set_slider(page, "det-thr", 1.0)
    assert page.get_attribute("#canvas", "data-drawn-people") == "1"
    set_slider(page, "det-thr", 0.3)

    # hover a joint: its name and score
    j = next(i for i, (x, y, s) in enumerate(kpts) if 20 <= x < 620 and 20 <= y < 405 and s >= 0)
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 640
    page.mouse.move(box["x"] + kpts[j, 0] * scale, box["y"] + kpts[j, 1] * scale)
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible", timeout=5000)
    assert want["people"][0]["joint_names"][j] in tip.text_content()
    assert f"{kpts[j, 2]:.2f}" in tip.text_content()
    page.screenshot(path=str(shots / "photo.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "download.json"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "000000000785_pose.json"
    assert json.loads(saved.read_text()) == shown  # exactly the answer the page got


def test_bad_file_shows_the_servers_message(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"these are not the pixels you are looking for" * 10)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state='error']", timeout=10000)
    assert "415: notes.jpg: not an image this server reads; send a JPEG, PNG or WebP image" in page.text_content(
        "#status"
    )


def test_webcam_frames_are_answered_and_drawn(page, shots):
    before = int(page.get_attribute("body", "data-answers") or 0)
    page.click("#webcam")
    page.wait_for_function(f"() => Number(document.body.dataset.answers) >= {before + 3}", timeout=20000)
    page.click("#webcam")  # stop
    shown = json.loads(page.text_content("#json"))
    assert shown["image"]["file"].startswith("webcam-") and shown["image"]["file"].endswith(".jpg")
    assert (shown["image"]["width"], shown["image"]["height"]) == (640, 480)  # Chromium's fake camera
    assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [640, 480]
    assert page.get_attribute("#canvas", "data-drawn-people") == "1"
    kpts = np.asarray(shown["people"][0]["keypoints"]).reshape(-1, 3)
    inside = [(x, y) for x, y, s in kpts if 2 <= x < 638 and 2 <= y < 478 and s >= 0.3]
    for x, y in inside:
        assert tuple(pixels(page, int(x), int(y), 1, 1)[0, 0]) == JOINT_RGB, (x, y)
    page.screenshot(path=str(shots / "webcam.png"), full_page=True)
    assert page.text_content("#webcam") == "Use the webcam"


def test_dropped_photo_is_answered(page, server):
    """Drag and drop: a PNG of another real photo dropped on the drop zone."""
    import base64

    import cv2

    other = sorted((DATA / "samples" / "coco").glob("*.jpg"))[1]
    ok, png = cv2.imencode(".png", cv2.imread(str(other)))
    assert ok
    before = int(page.get_attribute("body", "data-answers") or 0)
    data = page.evaluate_handle(
        """(b64) => { const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer(); dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
            return dt; }""",
        base64.b64encode(png.tobytes()).decode(),
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    page.wait_for_function(f"() => Number(document.body.dataset.answers) > {before}", timeout=20000)
    shown = json.loads(page.text_content("#json"))
    want = api_answer(server, png.tobytes(), "dropped.png")
    assert without_timings(shown) == without_timings(want)
    h, w = cv2.imread(str(other)).shape[:2]
    assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [w, h]
