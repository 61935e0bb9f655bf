"""Check docs/samples/index.html in headless Chromium (needs: pip install playwright; Debian chromium):
every <audio> loads and lasts one second, every image loads, nothing is fetched from elsewhere; a screenshot.

    python benchmarks/check_samples_page.py docs/samples/index.html /tmp/samples_page.png
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

page_path, shot = os.path.abspath(sys.argv[1]), sys.argv[2]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("file://" + page_path)
    page.wait_for_function("""() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)""",
                           timeout=60000)
    audio = page.evaluate("""() => [...document.querySelectorAll('audio')].map(a => ({src: a.getAttribute('src'),
        ready: a.readyState, duration: a.duration, error: a.error ? a.error.code : null}))""")
    images = page.evaluate("""() => [...document.querySelectorAll('img')].map(i => ({src: i.getAttribute('src'),
        ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight}))""")
    page.screenshot(path=shot, full_page=False)
    browser.close()
bad_audio = [a for a in audio if a["error"] is not None or not (0.99 <= a["duration"] <= 1.01)]
bad_img = [i for i in images if not i["ok"]]
external = [u for u in requests if not u.startswith("file://")]
print(json.dumps({"audio": len(audio), "bad_audio": bad_audio, "images": len(images), "bad_images": bad_img,
                  "durations": sorted({round(a["duration"], 3) for a in audio}), "external_requests": external}))
sys.exit(1 if bad_audio or bad_img or external else 0)
