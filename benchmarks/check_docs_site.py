"""Check the built documentation site in headless Chromium: every page loads, every image and audio
element loads, no request leaves the machine; screenshots of the home page and one guide.

    mkdocs build --strict && python benchmarks/check_docs_site.py site/ /tmp/docs-shots/

Needs ``pip install playwright`` and a Chromium (Debian: ``apt-get install chromium``; the path is
``--chromium``). The site is served from a local HTTP server; every HTML page under it is visited, and every
same-site link on it is followed (raw-HTML links are not checked by mkdocs).
Prints one JSON summary and exits 1 when anything failed.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import sys
import threading
import urllib.error
import urllib.request


def pages(site: str) -> list[str]:
    """URL paths of every HTML page of the site (its theme's assets and search index aside)."""
    out = []
    for root, _, files in os.walk(site):
        rel = os.path.relpath(root, site).replace(os.sep, "/")
        if rel.startswith(("assets", "search")):
            continue
        out += [("/" if rel == "." else f"/{rel}/") + f for f in files if f.endswith(".html")]
    return sorted(out)


def broken_links(base: str, hrefs: list[str]) -> list[str]:
    """The same-site links (page and file targets, anchors dropped) that do not answer 200."""
    bad = []
    for url in sorted({h.split("#")[0] for h in hrefs if h.startswith(base)}):
        try:
            with urllib.request.urlopen(url) as r:
                ok = r.status == 200
        except urllib.error.URLError:
            ok = False
        if not ok:
            bad.append(url[len(base):])
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", help="the built site (mkdocs build's site/)")
    parser.add_argument("shots", help="folder for the screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default: /usr/bin/chromium)")
    parser.add_argument("--guide", default="/training.html", help="the guide to take a screenshot of (default: /training.html)")
    parser.add_argument("--missing-ok", action="append", default=[], metavar="PATH",
                        help="a link target that may be absent, e.g. samples/index.html before the listening page is "
                             "built (repeatable)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a, **k):  # one JSON summary, not a line per request
            pass

    handler = functools.partial(Quiet, directory=os.path.abspath(args.site))
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # the browser dropping a connection is not a failure
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    os.makedirs(args.shots, exist_ok=True)
    report = {"pages": 0, "images": 0, "audio": 0, "problems": [], "external_requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        failed = []
        page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:"))
                else report["external_requests"].append(r.url))
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: failed.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None)
        page.on("pageerror", lambda e: failed.append(f"script error: {e}"))
        for path in pages(args.site):
            failed.clear()
            response = page.goto(base + path, wait_until="networkidle")
            report["pages"] += 1
            if response is None or response.status != 200:
                report["problems"].append(f"{path}: HTTP {response.status if response else 'no response'}")
            page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30000)
            images = page.evaluate("() => [...document.images].map(i => ({src: i.getAttribute('src'), "
                                   "ok: i.naturalWidth > 0}))")
            audio = page.evaluate("() => [...document.querySelectorAll('audio')].map(a => ({src: a.currentSrc, "
                                  "ok: a.readyState >= 1 && !a.error}))")
            report["images"] += len(images)
            report["audio"] += len(audio)
            report["problems"] += [f"{path}: image {i['src']} did not load" for i in images if not i["ok"]]
            report["problems"] += [f"{path}: audio {a['src']} did not load" for a in audio if not a["ok"]]
            report["problems"] += [f"{path}: {f}" for f in failed]
            hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
            report["problems"] += [f"{path}: link to {u} is broken" for u in broken_links(base, hrefs)
                                   if u.lstrip("/") not in args.missing_ok]
            if path in ("/index.html", args.guide):
                name = "home" if path == "/index.html" else path.strip("/").replace("/", "_").removesuffix(".html")
                page.screenshot(path=os.path.join(args.shots, f"{name}.png"))
        browser.close()
    server.shutdown()
    print(json.dumps(report, indent=1))
    return 1 if report["problems"] or report["external_requests"] or not report["pages"] else 0


if __name__ == "__main__":
    sys.exit(main())
