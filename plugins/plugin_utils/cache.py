# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Answers kept on the controller between runs, keyed by a digest of everything they depend on.

A rerun with the same inventory asks the same questions (is this file free of duplicate keys? are
these variables valid?); the answers live in the user's cache directory,
``$XDG_CACHE_HOME/followme-asterisk`` (default ``~/.cache/followme-asterisk``), one small JSON file each,
named by the SHA-256 of the code that answers, the question and its data. Any change to any of them is
another name, so nothing is ever invalidated; a cache that cannot be read or written is simply not used.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from ansible_collections.followme.asterisk.plugins.module_utils.digest import source_digest


def digest(modules, *parts) -> str | None:
    """The name of an answer: module_utils.digest.source_digest of the answering code and the question's data;
    None when a source cannot be read (nothing is kept or read then)."""
    return source_digest(modules, *parts) or None


def _path(kind: str, key: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "followme-asterisk", f"{kind}-{key}.json")


def read(kind: str, key: str | None) -> Any:
    """The answer kept under this key, or None."""
    if not key:
        return None
    try:
        with open(_path(kind, key), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write(kind: str, key: str | None, value: Any) -> None:
    """Keep an answer (JSON) under this key; a read-only home keeps nothing."""
    if not key:
        return
    path = _path(kind, key)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(value, out)
        os.replace(temporary, path)
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(temporary)
