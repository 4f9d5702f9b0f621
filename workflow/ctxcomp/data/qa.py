"""One entry point for the evaluation sets: load, filter, validate, write records and stats."""
from __future__ import annotations

import logging
from collections.abc import Callable

from ..config import fill_section
from ..io import provenance, write_json
from .conflictqa import load_conflictqa
from .faitheval import load_faitheval
from .musique import load_musique
from .readers import DataError
from .records import KIND_OF_SOURCE, write_records

log = logging.getLogger(__name__)

LOADERS: dict[str, Callable[[dict, int], tuple[list[dict], dict]]] = {
    "faitheval": load_faitheval,
    "conflictqa": load_conflictqa,
    "musique": load_musique,
}


def load_qa(name: str, source: dict, seed: int = 0) -> tuple[list[dict], dict]:
    """Records and stats of evaluation set `name` (faitheval | conflictqa | musique) from its config section."""
    if name not in LOADERS:
        raise ValueError(f"unknown QA dataset {name!r}; expected one of {sorted(LOADERS)}")
    return LOADERS[name](dict(source), seed)


def prepare_qa(name: str, source: dict, seed: int, out_records: str, out_stats: str) -> dict:
    """Write `name`'s records (JSONL, validated against its schema) and stats JSON; return the stats."""
    records, stats = load_qa(name, source, seed)
    need = fill_section(f"data.{name}", source)["min_records"]
    if len(records) < need:  # an empty or gutted file would otherwise give NaN accuracies downstream
        raise DataError(f"{name}: {len(records)} record(s) from {source.get('path')} after filtering (read "
                        f"{stats.get('read')}, dropped {stats.get('dropped')}), fewer than data.{name}.min_records="
                        f"{need}")
    n = write_records(out_records, records, kind=KIND_OF_SOURCE[name])
    stats = {**stats, "seed": seed, "record_kind": KIND_OF_SOURCE[name], "provenance": provenance()}
    log.info("%s: read %d, kept %d, wrote %d; dropped %s", name, stats["read"], stats["kept"], n, stats["dropped"])
    write_json(out_stats, stats)
    return stats
