"""
The twisted.web resource that serves the page and its assets.

The files are read from the package once, when the daemon starts: they are
few and small, and only the names found then can ever be served (no path
from a request reaches the filesystem).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from twisted.web.resource import Resource

if TYPE_CHECKING:
    # For annotations only: the page does not depend on the HTTP package.
    from ..http._typed_request import TypedRequest

__all__ = ["INDEX_NAME", "STATIC_DIR", "IndexPage", "StaticFile", "StaticFiles", "index_page"]

#: The directory of the page's files, inside the package.
STATIC_DIR = Path(__file__).parent / "static"
#: The page itself, served at C{/}.
INDEX_NAME = "index.html"

#: Content types of the assets (a browser refuses a module script that is not
#: served as JavaScript, whatever the host's C{mimetypes} tables say).
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".json": b"application/json",
    ".png": b"image/png",
    ".txt": b"text/plain; charset=utf-8",
}


@attrs.frozen
class StaticFile:
    """
    One file of the page: its bytes, its content type, and an entity tag for
    revalidation.
    """

    content: bytes
    content_type: bytes
    etag: bytes

    @classmethod
    def read(cls, path: Path) -> StaticFile:
        content = path.read_bytes()
        etag = b'"' + hashlib.sha256(content).hexdigest()[:24].encode() + b'"'
        return cls(content, CONTENT_TYPES.get(path.suffix, b"application/octet-stream"), etag)

    def render(self, request: TypedRequest) -> bytes:
        """
        Answer C{request} with the file (or 304 if the browser's copy is current).

        C{Cache-Control: no-cache}: the browser revalidates each time (cheaply,
        with C{If-None-Match}), so a new version of the page shows at once after
        an upgrade.
        """
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"ETag", self.etag)
        if request.setETag(self.etag):
            return b""
        request.setHeader(b"Content-Length", str(len(self.content)).encode())
        if request.method == b"HEAD":
            return b""
        return self.content


def _load(directory: Path) -> dict[str, StaticFile]:
    return {
        path.relative_to(directory).as_posix(): StaticFile.read(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


class StaticFiles(Resource):
    """
    The files under a directory (L{STATIC_DIR}), by their relative paths:
    C{/static/js/main.js} is C{js/main.js}.  Nothing else: no listings, no
    other paths.
    """

    isLeaf = True

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self.files = _load(directory)

    def render_GET(self, request: TypedRequest) -> bytes:
        try:
            name = b"/".join(request.postpath or ()).decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        found = self.files.get(name)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Not found\n"
        return found.render(request)

    render_HEAD = render_GET


class IndexPage(Resource):
    """
    The page itself.  A leaf: the route that returns it matched the whole path.
    """

    isLeaf = True

    def __init__(self, page: StaticFile) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self.page = page

    def render_GET(self, request: TypedRequest) -> bytes:
        return self.page.render(request)

    render_HEAD = render_GET


def index_page(files: StaticFiles) -> IndexPage:
    """
    The resource of the page, from the loaded files.
    """
    return IndexPage(files.files[INDEX_NAME])
