"""Content-addressed store of model replies: the question set is a dataset paid for once.

One JSON file per request, named by the sha256 of everything that determines the reply (model, endpoint, prompt
version, full messages, sampling parameters), so a re-run or a run resumed after a crash sends no request whose reply
is on disk. Sampled (temperature > 0) replies are cached too: the first sample *is* the dataset. Files are written
to a temporary name and renamed (`atomic_write`), because the fineweb and faitheval jobs share one cache directory
and may run at the same time; readers therefore see a whole file or none. The API key is never part of a key or file.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ..io import atomic_write

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def request_key(*, model: str, base_url: str, prompt_version: str, messages: list[dict], sampling: dict) -> str:
    """sha256 over the canonical JSON of the request; any change to what the model sees gives a new key."""
    material = {
        "format": CACHE_FORMAT,
        "model": model,
        "base_url": base_url.rstrip("/"),
        "prompt_version": prompt_version,
        "messages": messages,
        "sampling": sampling,
    }
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


class ReplyCache:
    """A directory of `<key[:2]>/<key>.json` files (sharded so no directory grows to tens of thousands of entries)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached reply, or None; an unreadable file (e.g. left by a full disk) counts as a miss."""
        path = self.path(key)
        try:
            with open(path, encoding="utf-8") as fh:
                record = json.load(fh)
            return record["reply"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def put(self, key: str, request: dict[str, Any], reply: dict[str, Any]) -> None:
        record = {
            "format": CACHE_FORMAT,
            "key": key,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "request": request,
            "reply": reply,
        }
        with atomic_write(self.path(key), encoding="utf-8") as fh:
            json.dump(record, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
