"""
The web task manager: a static page, shipped inside the package, that speaks
only the public protocol (the WebSocket at C{/api/current}, C{/_upload},
C{/_download}).  No build step: the files under C{static/} are served as they are.
"""

from ._resource import INDEX_NAME, STATIC_DIR, IndexPage, StaticFile, StaticFiles, index_page

__all__ = ["INDEX_NAME", "STATIC_DIR", "IndexPage", "StaticFile", "StaticFiles", "index_page"]
