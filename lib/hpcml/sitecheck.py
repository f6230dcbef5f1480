"""Check the rendered walkthrough the way a reader sees it: in headless Chromium.

Serves the site folder on loopback, loads the index and every page in Debian's
Chromium (driven through chromedriver by selenium), and reports console errors,
broken links (every relative ``href``/``src`` is fetched, every ``#fragment`` must
name an element on its page), images that did not decode, and absolute URLs that would
tie the site to one place or load from the network (the site must be relocatable to any
static host and render offline): a root-relative or ``file:`` link, a link to loopback,
or an image, stylesheet or script from an absolute URL. A plain ``<a href="https://…">``
to a public page is a citation (the walkthrough cites its sources): it is listed in
``external``, not fetched, and not a fault. Saves a screenshot of the index.

Run as ``python -m hpcml.sitecheck [SITE_DIR]``.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import paths

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1600",
)


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed; the message names the Debian package."""


@dataclass
class PageReport:
    url: str
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    absolute: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.console_errors or self.broken or self.absolute)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D102
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a browser closing early is not an error
        pass


@dataclass
class LocalSite:
    """A static HTTP server for a folder on 127.0.0.1 (a thread; stop() shuts it down)."""

    root: Path
    server: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> "LocalSite":
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __exit__(self, *exc) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def _driver():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise BrowserMissing("headless Chromium needs Debian's packages 'chromium' and 'chromium-driver'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


_LINKS_JS = """
const out = [];
for (const el of document.querySelectorAll('a[href], img[src], link[href], script[src]')) {
  out.push([el.tagName, el.getAttribute('href') ?? el.getAttribute('src'),
            el.tagName === 'IMG' ? (el.complete && el.naturalWidth > 0) : true]);
}
return out;
"""


def _fetch_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _is_citation(tag: str, parsed: urllib.parse.ParseResult) -> bool:
    """An ``<a>`` link to a public http(s) page: a source the text cites, not part of the site."""
    return (tag == "A" and parsed.scheme in ("http", "https") and bool(parsed.hostname)
            and parsed.hostname not in _LOOPBACK and not parsed.hostname.startswith("127."))


def check_page(drv, url: str) -> PageReport:
    """Load one page and report what a reader would trip over."""
    drv.get(url)
    rep = PageReport(url, drv.title)
    rep.console_errors = [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    for tag, ref, decoded in drv.execute_script(_LINKS_JS):
        if not ref or ref.startswith(("data:", "mailto:", "javascript:")):
            continue
        parsed = urllib.parse.urlparse(ref)
        if parsed.scheme or ref.startswith("/"):
            if _is_citation(tag, parsed):
                rep.external.append(ref)
            else:
                rep.absolute.append(ref)
            continue
        if tag == "IMG" and not decoded:
            rep.broken.append(f"image did not load: {ref}")
        target = urllib.parse.urljoin(url, ref)
        page, _, frag = target.partition("#")
        if page != url.partition("#")[0] and not _fetch_ok(page):
            rep.broken.append(f"{tag.lower()} -> {ref}")
        elif frag and page == url.partition("#")[0]:
            found = drv.execute_script(
                "return document.getElementById(decodeURIComponent(arguments[0])) !== null"
                " || document.getElementById(arguments[0]) !== null;", frag)
            if not found:
                rep.broken.append(f"anchor not found: #{frag}")
    return rep


def check_site(site: Path | None = None, screenshot: Path | None = None) -> list[PageReport]:
    """Check the index and every page linked from it; save a screenshot of the index.

    Returns:
        One :class:`PageReport` per page, index first.
    """
    site = Path(site or paths.site_dir())
    if not (site / "index.html").exists():
        raise FileNotFoundError(f"{site}/index.html not found: run the pipeline first (ci/pipeline)")
    screenshot = screenshot or paths.build_dir() / "site-index.png"
    reports = []
    with LocalSite(site) as srv:
        drv = _driver()
        try:
            pages = ["index.html"] + sorted(p.name for p in site.glob("*.html") if p.name != "index.html")
            for name in pages:
                reports.append(check_page(drv, srv.url + name))
                if name == "index.html":
                    paths.ensure(screenshot.parent)
                    h = drv.execute_script("return document.body.scrollHeight")
                    drv.set_window_size(1280, min(max(int(h) + 40, 800), 4000))
                    drv.save_screenshot(str(screenshot))
                    drv.set_window_size(1280, 1600)
        finally:
            drv.quit()
    return reports


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    site = Path(argv[0]) if argv else None
    try:
        reports = check_site(site)
    except (BrowserMissing, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for r in reports:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.url}  ({r.title})")
        for item in r.console_errors + r.broken + r.absolute:
            print(f"       {item}")
        bad += not r.ok
    print(f"screenshot: {paths.build_dir() / 'site-index.png'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
