"""Whitelist path patterns: validate and compile once, match decoded paths (SPEC §3).

Patterns: exact ``/api/v1/pipelines``; a ``{name}`` segment matches one path segment
(``/api/v1/pipelines/{id}``); a trailing ``/*`` matches that path and anything below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError

_PARAM_RE = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}\Z")
_LITERAL_RE = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,;=:@]+\Z")


def validate_endpoint_pattern(value: str) -> None:
    """Refuse a malformed endpoint pattern, naming what is wrong."""
    if not value.startswith("/"):
        raise ValidationError("An endpoint path starts with '/'.", code="invalid_pattern")
    body = value[1:]
    if body.endswith("/*"):
        body = body[:-2]
    elif body == "*":
        body = ""
    if body == "":
        return
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise ValidationError(
                "An endpoint path has no empty, '.' or '..' segments (trailing '/' included).",
                code="invalid_pattern",
            )
        if "{" in segment or "}" in segment:
            if not _PARAM_RE.match(segment):
                raise ValidationError(
                    f"'{segment}': a parameter is a whole segment like {{id}}.", code="invalid_pattern"
                )
        elif "*" in segment:
            raise ValidationError("'*' is only allowed as a final '/*'.", code="invalid_pattern")
        elif not _LITERAL_RE.match(segment):
            raise ValidationError(f"Invalid character in segment '{segment}'.", code="invalid_pattern")


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A compiled endpoint pattern; ``matches`` takes a safe, decoded path.

    A pattern without ``{name}`` segments needs no regular expression: it is the path
    ``base`` itself, or (``subtree``) that path and anything below it. A fleet's config
    holds tens of thousands of such patterns, and compiling each into a regex took most
    of a compile; comparing strings is also quicker per request.
    """

    source: str
    regex: re.Pattern[str] | None  # None: a literal pattern, matched by ``base``/``subtree``
    literal_segments: int  # for ordering: more literal segments is more specific
    base: str = ""
    subtree: bool = False

    def matches(self, path: str) -> bool:
        """Return True when ``path`` (decoded, already checked safe) matches."""
        if self.regex is not None:
            return self.regex.match(path) is not None
        base = self.base
        if path == base:
            return True
        return self.subtree and path.startswith(base) and path[len(base) : len(base) + 1] == "/"


def compile_pattern(source: str) -> PathPattern:
    """Compile a validated endpoint pattern into a ``PathPattern``."""
    validate_endpoint_pattern(source)
    body = source[1:]
    prefix_match = False
    if body.endswith("/*"):
        body, prefix_match = body[:-2], True
    elif body == "*":
        body, prefix_match = "", True
    parts: list[str] = []
    literals = 0
    segments = body.split("/") if body else []
    for segment in segments:
        if _PARAM_RE.match(segment):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
            literals += 1
    if literals == len(segments):  # no parameter: a plain path, or a subtree of one
        base = "".join(f"/{segment}" for segment in segments) or ("" if prefix_match else "/")
        return PathPattern(source=source, regex=None, literal_segments=literals, base=base, subtree=prefix_match)
    regex = "/" + "/".join(parts)
    if prefix_match:
        # The path itself, or anything below it on a segment boundary.
        regex = (regex.rstrip("/") + "(?:/.*)?") if parts else "/.*"
    return PathPattern(source=source, regex=re.compile(regex + r"\Z", re.DOTALL), literal_segments=literals)
