"""Following ``$ref``: local JSON pointers, relative files, and (only when allowed) remote URLs.

The policy is deny-by-default, because a document is untrusted input:

- a reference to a file must stay inside the *root* folder (the project, i.e. the current folder when
  it holds the document, else the document's own folder, unless the caller names another);
  ``../../etc/passwd``, absolute paths, ``file://`` URLs and symlinks that lead out are refused
  unless ``allow_outside_root`` is set;
- ``http(s)`` references are refused unless ``allow_remote`` is set, and even then link-local and
  loopback-metadata style addresses are not special-cased: the caller opted in;
- every file read goes through the same size and safety checks as the main document.

A chain of references that only points at further references and comes back to itself is an error
(the document is unusable); a *schema* that refers to itself through properties is fine and is handled
by the walkers, which track what they have visited.
"""

from __future__ import annotations

import difflib
import os
import stat
import urllib.parse
from typing import Any, NamedTuple

from tidings.asyncapi.source import DEFAULT_MAX_BYTES, YMap, check_text, kind_of, parse_text
from tidings.errors import Locatable, Location, ReferenceError_, SourceError


class LoadOptions(NamedTuple):
    """What a load may do beyond reading the one file it was given."""

    max_bytes: int = DEFAULT_MAX_BYTES
    allow_remote: bool = False
    allow_outside_root: bool = False
    #: folder that file references must stay inside; default: the current folder (the project) when
    #: the document is inside it, else the document's own folder
    root: str | None = None
    remote_timeout: float = 10.0


class Target(NamedTuple):
    """Where a reference led: the value, the file holding it, and its path inside that file."""

    value: Any
    file: str
    path: tuple[str | int, ...]


class Resolver:
    """Loads the files a document refers to (each once) and resolves references between them."""

    def __init__(self, options: LoadOptions, root_dir: str) -> None:
        self.options = options
        self.root_dir = root_dir
        self.files: dict[str, Any] = {}
        #: (key, first, second) for each duplicate key met in any loaded file
        self.duplicates: list[tuple[str, Location, Location]] = []
        self._display: dict[str, str] = {}
        self._by_display: dict[str, str] = {}
        self._cache: dict[tuple[str, str], Target] = {}
        #: references being resolved right now: a pointer that walks through a $ref which leads back
        #: into the same pointer (``A: {$ref: '#/A/x'}``) would otherwise recurse until RecursionError
        self._resolving: set[tuple[str, str]] = set()
        self._real_root = os.path.realpath(root_dir)

    # -- files -------------------------------------------------------------------------------
    def display_name(self, key: str) -> str:
        return self._display.get(key, key)

    def load_file(self, path: str, display: str | None = None) -> Any:
        """Read and parse a local file (by absolute path), once."""
        key = os.path.abspath(path)
        if key in self.files:
            return self.files[key]
        shown = display or _relative(key)
        self._display[key] = shown
        self._by_display[shown] = key
        try:
            info = os.stat(key)
        except OSError as exc:
            raise SourceError(
                f"cannot read file: {exc.strerror or exc}", Location(shown, 1, 1), code="unreadable"
            ) from None
        except ValueError as exc:  # a path with a NUL byte in it
            raise SourceError(f"cannot read file: {exc}", Location(shown, 1, 1), code="unreadable") from None
        if not stat.S_ISREG(info.st_mode):
            # a FIFO would block the read forever, a device would stream without end: documents are files
            raise SourceError(
                "not a regular file (a pipe, device or socket): give the path of a YAML or JSON document",
                Location(shown, 1, 1),
                code="unreadable",
            )
        size = info.st_size
        if size > self.options.max_bytes:
            raise SourceError(
                f"file is {size:,} bytes, over the {self.options.max_bytes:,}-byte limit "
                "(raise it with --max-size if the document is really that big)",
                Location(shown, 1, 1),
                code="too-large",
            )
        try:
            with open(key, "rb") as fh:
                data = fh.read(self.options.max_bytes + 1)
        except OSError as exc:
            raise SourceError(
                f"cannot read file: {exc.strerror or exc}", Location(shown, 1, 1), code="unreadable"
            ) from None
        except ValueError as exc:  # e.g. a path with a NUL byte in it
            raise SourceError(f"cannot read file: {exc}", Location(shown, 1, 1), code="unreadable") from None
        text = check_text(data, shown, self.options.max_bytes)
        value = parse_text(text, shown, self.duplicates)
        self.files[key] = value
        return value

    def _load_remote(self, url: str, where: Location | Locatable | None) -> Any:
        if url in self.files:
            return self.files[url]
        self._display[url] = url
        self._by_display[url] = url
        import urllib.request  # only remote loads need it, and it costs 20 ms of start-up

        request = urllib.request.Request(url, headers={"User-Agent": "tidings"})
        try:
            with urllib.request.urlopen(request, timeout=self.options.remote_timeout) as response:
                data = response.read(self.options.max_bytes + 1)
        except Exception as exc:  # network errors come in many types; all mean "could not fetch"
            raise ReferenceError_(f"could not fetch {url}: {exc}", where) from None
        text = check_text(data, url, self.options.max_bytes)
        value = parse_text(text, url, self.duplicates)
        self.files[url] = value
        return value

    def file_of(self, node: Any, default: str) -> str:
        """The file key (absolute path or URL) a parsed node came from."""
        file = getattr(node, "file", None)
        if file is None:
            return default
        return self._by_display.get(file, default)

    # -- references --------------------------------------------------------------------------
    def resolve(self, ref: Any, base_file: str, where: Location | Locatable | None) -> Target:
        """Resolve one ``$ref`` string written in ``base_file`` (its key: absolute path or URL)."""
        if not isinstance(ref, str):
            raise ReferenceError_(f"$ref must be a string, got {kind_of(ref)}", where)
        cached = self._cache.get((base_file, ref))
        if cached is not None:
            return cached
        if (base_file, ref) in self._resolving:
            raise ReferenceError_(f"$ref {ref!r} runs into a circular reference chain", where, code="circular-ref")
        self._resolving.add((base_file, ref))
        try:
            target = self._resolve(ref, base_file, where)
        finally:
            self._resolving.discard((base_file, ref))
        self._cache[(base_file, ref)] = target
        return target

    def _resolve(self, ref: str, base_file: str, where: Location | Locatable | None) -> Target:
        url, _, fragment = ref.partition("#")
        fragment = urllib.parse.unquote(fragment)
        if url == "":
            file_key = base_file
            doc = self.files[base_file]
        else:
            file_key, doc = self._open(url, base_file, where)
        value, path = self._walk_pointer(doc, fragment, ref, where, file_key)
        return Target(value, file_key, path)

    def _open(self, url: str, base_file: str, where: Location | Locatable | None) -> tuple[str, Any]:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        base_is_remote = base_file.startswith(("http://", "https://"))
        if scheme in ("http", "https") or (scheme == "" and base_is_remote):
            full = urllib.parse.urljoin(base_file, url) if base_is_remote else url
            if not self.options.allow_remote:
                raise ReferenceError_(
                    f"remote reference {full} refused: remote $refs are off (allow them with --allow-remote-refs)",
                    where,
                    code="ref-remote-refused",
                )
            return full, self._load_remote(full, where)
        if scheme == "file":
            path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        elif scheme and len(scheme) > 1:
            raise ReferenceError_(f"unsupported reference scheme {scheme!r} in {url!r}", where)
        else:
            path = urllib.parse.unquote(url)
            if not os.path.isabs(path):
                path = os.path.join(os.path.dirname(base_file), path)
        if "\x00" in path:
            # a YAML "\0" escape: os.path.realpath/open would raise ValueError ("embedded null byte")
            raise ReferenceError_(f"reference {url!r} is not a usable file path: it contains a NUL character", where)
        path = os.path.abspath(path)
        if not self.options.allow_outside_root:
            real = os.path.realpath(path)
            if os.path.commonpath([real, self._real_root]) != self._real_root:
                raise ReferenceError_(
                    f"reference {url!r} leads outside the document's folder {self.root_dir!r}: refused "
                    "(allow it with --allow-outside-root, or set --root)",
                    where,
                    code="ref-outside-root",
                )
        if not os.path.isfile(path):
            raise ReferenceError_(f"referenced file {url!r} does not exist", where)
        try:
            return path, self.load_file(path)
        except SourceError as exc:
            raise ReferenceError_(f"referenced file {url!r} cannot be read: {exc}", where) from None

    def _walk_pointer(
        self, doc: Any, fragment: str, ref: str, where: Location | Locatable | None, file_key: str
    ) -> tuple[Any, tuple[str | int, ...]]:
        if fragment in ("", "/"):
            return doc, ()
        if not fragment.startswith("/"):
            raise ReferenceError_(f"$ref {ref!r}: the part after '#' must be a JSON pointer starting with '/'", where)
        node = doc
        path: list[str | int] = []
        seen: set[int] = set()
        for raw in fragment[1:].split("/"):
            token = raw.replace("~1", "/").replace("~0", "~")
            # A pointer may pass through a reference (json-schema-ref-parser does the same).
            while isinstance(node, dict) and "$ref" in node and token not in node:
                if id(node) in seen:
                    raise ReferenceError_(
                        f"$ref {ref!r} runs into a circular reference chain", where, code="circular-ref"
                    )
                seen.add(id(node))
                hop = self.resolve(node["$ref"], file_key, node if isinstance(node, YMap) else where)
                node, file_key = hop.value, hop.file
            if isinstance(node, dict) and token in node:
                node = node[token]
                path.append(token)
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
                path.append(int(token))
            else:
                shown = self.display_name(file_key)
                hint = ""
                if isinstance(node, dict):
                    close = difflib.get_close_matches(token, [str(k) for k in node], n=1, cutoff=0.7)
                    hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise ReferenceError_(
                    f"$ref {ref!r} points at nothing: {token!r} does not exist in {shown}{hint}", where
                )
        return node, tuple(path)

    def deref(self, node: Any, base_file: str) -> tuple[Any, str]:
        """Follow ``node`` while it is a reference object; refuse reference chains that loop."""
        seen: list[int] = []
        while isinstance(node, dict) and "$ref" in node:
            if id(node) in seen:
                raise ReferenceError_(
                    f"circular $ref chain: {node['$ref']!r} leads back to itself, so it never reaches a value",
                    node if isinstance(node, YMap) else None,
                    code="circular-ref",
                )
            seen.append(id(node))
            target = self.resolve(node["$ref"], base_file, node if isinstance(node, YMap) else None)
            node, base_file = target.value, target.file
        return node, base_file


def _relative(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith(".." + os.sep + "..") else rel


__all__ = ["LoadOptions", "Resolver", "Target"]
