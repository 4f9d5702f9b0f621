"""FineWeb (or a local web-text JSONL) cut into reconstruction chunks: an L-token segment plus its continuation.

Why it is built this way:
- Chunks are cut in the tokens of the pipeline's chunk tokenizer and `text` is decoded from exactly L of them, so a
  segment is L tokens for that tokenizer, not "about L words". Within a document, chunks are consecutive and never
  overlap (neither segments nor continuations), so no training text is seen twice through an overlap.
- The train/eval split is made per DOCUMENT from a hash of (seed, doc id): two chunks of one document can never
  land on both sides, and the split does not depend on the order of reading or on the train quota. An eval
  document gives at most `eval_chunks_per_doc` chunks (default 1, its first), so a few long pages cannot make up
  the whole evaluation set; its other chunks are dropped, not moved to training.
- Exact-duplicate chunks (web boilerplate) are dropped by a hash of their normalized text across both sides, so an
  eval chunk never appears verbatim in training; near-empty chunks (fewer than `min_chars` characters) are dropped.
- The hub source is streamed and reading stops once both quotas are met: the full run needs 4,444,672 training and
  449 evaluation contexts, a small part of the 10B-token sample.
"""
from __future__ import annotations

import logging
import sys
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..io import provenance, write_json
from .readers import ErrorLog, hub_rows, iter_rows, resolve_path
from .records import stable_unit, text_key, write_records

log = logging.getLogger(__name__)

DEFAULT_EVAL_DOC_FRACTION = 0.05
DEFAULT_EVAL_CHUNKS_PER_DOC = 1
MIN_CONTINUATION_TOKENS = 8  # a chunk needs L tokens + at least this many (capped at C) for its continuation
BATCH_DOCS = 256


def load_tokenizer(src: str) -> Any:
    """`AutoTokenizer` from a hub id or a local directory (config paths are relative to the repo root)."""
    from transformers import AutoTokenizer

    local = resolve_path(src)
    return AutoTokenizer.from_pretrained(str(local) if local.exists() else src)


def chunk_spans(n_tokens: int, segment_tokens: int, continuation_tokens: int,
                min_continuation: int | None = None) -> list[tuple[int, int, int]]:
    """(start, segment_end, continuation_end) of each chunk of a document of `n_tokens` tokens.

    Chunks advance by L + C, so they do not overlap; the last one may have a continuation shorter than C but at
    least `min_continuation` tokens (default min(C, 8)), so a document shorter than L + that yields no chunk.
    """
    L, C = segment_tokens, continuation_tokens
    need = min(C, MIN_CONTINUATION_TOKENS) if min_continuation is None else max(1, min(C, min_continuation))
    spans, start = [], 0
    while start + L + need <= n_tokens:
        spans.append((start, start + L, min(start + L + C, n_tokens)))
        start += L + C
    return spans


def is_eval_doc(doc_id: str, seed: int, fraction: float) -> bool:
    """Whether a document belongs to the evaluation side: a pure function of (seed, doc id)."""
    return stable_unit("fineweb-split", seed, doc_id) < fraction


def iter_documents(fw: dict, errors: ErrorLog, **hub_kwargs: Any) -> Iterator[tuple[str, str]]:
    """(doc_id, text) of each document: streamed from the hub, or read from a local JSONL file (or folder of them).

    The doc id is the row's `id` (FineWeb has one) or else `<file stem>:<line>`. Rows without a string text field
    go to `errors`. `data_files` (config) and `hub_kwargs` go to `load_dataset`; with path "json" that reads
    local files offline.
    """
    field = fw.get("text_field") or "text"
    schema = {"type": "object", "required": [field], "properties": {field: {"type": "string"}}}
    if fw["source"] == "hub":
        if fw.get("data_files"):
            hub_kwargs = {"data_files": fw["data_files"], **hub_kwargs}
        rows = hub_rows(fw["path"], fw.get("split") or "train", fw.get("name"), streaming=True, schema=schema,
                        errors=errors, **hub_kwargs)
    else:
        path = resolve_path(fw["path"])
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        rows = (row for f in files for row in iter_rows(f, schema, errors))
    for row in rows:
        rid = row.data.get("id")
        doc_id = str(rid) if rid not in (None, "") else f"{Path(row.file).stem}:{row.line}"
        yield doc_id, row.data[field]


def _batched(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while batch := list(islice(it, n)):
        yield batch


def iter_chunked(docs: Iterable[tuple[str, str]], tokenizer: Any, segment_tokens: int, continuation_tokens: int,
                 batch_docs: int = BATCH_DOCS) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(doc_id, [(segment text, continuation text), ...]) per document; tokenizes and decodes in batches."""
    for batch in _batched(docs, batch_docs):
        enc = tokenizer([t for _, t in batch], add_special_tokens=False, verbose=False)["input_ids"]
        pieces, spans = [], []
        for ids in enc:
            sp = chunk_spans(len(ids), segment_tokens, continuation_tokens)
            spans.append(len(sp))
            for a, b, c in sp:
                pieces += [ids[a:b], ids[b:c]]
        texts = tokenizer.batch_decode(pieces, clean_up_tokenization_spaces=False) if pieces else []
        k = 0
        for (doc_id, _), n in zip(batch, spans):
            yield doc_id, [(texts[k + 2 * i], texts[k + 2 * i + 1]) for i in range(n)]
            k += 2 * n


class ChunkSelector:
    """Applies the filters, the document-level split and the quotas, counting every decision."""

    def __init__(self, train_quota: int, eval_quota: int, seed: int, min_chars: int, eval_fraction: float,
                 eval_chunks_per_doc: int = DEFAULT_EVAL_CHUNKS_PER_DOC) -> None:
        self.train_quota, self.eval_quota = train_quota, eval_quota
        self.seed, self.min_chars, self.eval_fraction = seed, min_chars, eval_fraction
        self.eval_chunks_per_doc = eval_chunks_per_doc
        self.seen: set[bytes] = set()
        self.eval_records: list[dict] = []
        self.eval_docs: set[str] = set()
        self.n_train = self.train_docs = 0
        self.counts = dict(docs_read=0, docs_without_chunk=0, chunks_made=0, near_empty_dropped=0,
                           duplicates_dropped=0, eval_doc_extra_dropped=0, quota_dropped=0)

    @property
    def done(self) -> bool:
        return self.n_train >= self.train_quota and len(self.eval_records) >= self.eval_quota

    def add(self, doc_id: str, chunks: list[tuple[str, str]]) -> list[dict]:
        """Filter one document's chunks; keep eval ones internally and return the training records."""
        c = self.counts
        c["docs_read"] += 1
        c["chunks_made"] += len(chunks)
        if not chunks:
            c["docs_without_chunk"] += 1
            return []
        kept = []
        for k, (text, cont) in enumerate(chunks):
            if len(text.strip()) < self.min_chars or not cont.strip():
                c["near_empty_dropped"] += 1
                continue
            key = text_key(text)
            if key in self.seen:
                c["duplicates_dropped"] += 1
                continue
            self.seen.add(key)
            kept.append({"id": f"{doc_id}#{k}", "source": "fineweb", "doc_id": doc_id, "text": text,
                         "continuation": cont})
        if not kept:
            return []
        wants_eval = doc_id in self.eval_docs or is_eval_doc(doc_id, self.seed, self.eval_fraction)
        if wants_eval and (len(self.eval_records) < self.eval_quota or doc_id in self.eval_docs):
            if doc_id in self.eval_docs:  # a repeated doc id: its quota was used by the first occurrence
                c["eval_doc_extra_dropped"] += len(kept)
                return []
            take = kept[:min(self.eval_chunks_per_doc, self.eval_quota - len(self.eval_records))]
            self.eval_records += take
            self.eval_docs.add(doc_id)
            c["eval_doc_extra_dropped"] += len(kept) - len(take)
            return []
        room = self.train_quota - self.n_train
        take = kept[:max(0, room)]
        c["quota_dropped"] += len(kept) - len(take)
        if take:
            self.n_train += len(take)
            self.train_docs += 1
        return take


def prepare_fineweb(fw: dict, tokenizer: str, segment: dict, seed: int, out_train: str, out_eval: str,
                    out_stats: str) -> dict:
    """Write train/eval chunk files (JSONL, schema "chunk") and a stats JSON; return the stats.

    `fw` is the `data.fineweb` config section, `tokenizer` a hub id or local tokenizer dir, `segment` the
    `segment` section (max_segments concerns QA contexts and is not used here).
    """
    from tqdm import tqdm

    L, C = int(segment["segment_tokens"]), int(segment["continuation_tokens"])
    frac = float(fw.get("eval_doc_fraction") or DEFAULT_EVAL_DOC_FRACTION)
    min_chars = int(fw.get("min_chars", 200))
    tok = load_tokenizer(tokenizer)
    per_doc = int(fw.get("eval_chunks_per_doc") or DEFAULT_EVAL_CHUNKS_PER_DOC)
    sel = ChunkSelector(int(fw["train_contexts"]), int(fw["eval_contexts"]), seed, min_chars, frac, per_doc)
    errors = ErrorLog(f"fineweb source {fw['path']}")

    def train_records() -> Iterator[dict]:
        bar = tqdm(total=sel.train_quota + sel.eval_quota, unit="chunk", desc="fineweb chunks", file=sys.stderr,
                   mininterval=10, dynamic_ncols=True)
        try:
            for doc_id, chunks in iter_chunked(iter_documents(fw, errors), tok, L, C):
                before = len(sel.eval_records)
                out = sel.add(doc_id, chunks)
                bar.update(len(out) + len(sel.eval_records) - before)
                yield from out
                if sel.done:
                    break
        finally:
            bar.close()
        errors.raise_if_any()

    n_train = write_records(out_train, train_records(), kind="chunk")
    n_eval = write_records(out_eval, sel.eval_records, kind="chunk")
    stats = {
        "dataset": "fineweb",
        "source": {"source": fw["source"], "path": fw["path"], "name": fw.get("name"),
                   "split": fw.get("split") or "train", "text_field": fw.get("text_field") or "text"},
        "tokenizer": tokenizer,
        "tokenizer_class": type(tok).__name__,
        "segment_tokens": L,
        "continuation_tokens": C,
        "min_continuation_tokens": min(C, MIN_CONTINUATION_TOKENS),
        "min_chars": min_chars,
        "seed": seed,
        "eval_doc_fraction": frac,
        "eval_chunks_per_doc": per_doc,
        **sel.counts,
        "train": n_train,
        "eval": n_eval,
        "train_docs": sel.train_docs,
        "eval_docs": len(sel.eval_docs),
        "train_quota": sel.train_quota,
        "eval_quota": sel.eval_quota,
        "quotas_met": sel.done,
        "rules": {
            "chunking": "consecutive non-overlapping [L segment | up to C continuation] token windows; a chunk needs "
                        "L + min_continuation_tokens tokens",
            "near_empty": "segment text shorter than min_chars characters (after strip), or empty continuation",
            "duplicates": "exact duplicate of an earlier kept segment after lowercasing and whitespace collapsing",
            "split": "document goes to eval when sha256(seed, doc_id) < eval_doc_fraction and eval is not yet full, "
                     "giving its first eval_chunks_per_doc chunks; other chunks of eval docs and chunks beyond a "
                     "quota are dropped, never moved to the other side",
        },
        "provenance": provenance(),
    }
    if not sel.done:
        log.warning("fineweb: source exhausted before quotas were met: train %d/%d, eval %d/%d",
                    n_train, sel.train_quota, n_eval, sel.eval_quota)
    log.info("fineweb: %s", {k: stats[k] for k in ("docs_read", "chunks_made", "train", "eval")})
    write_json(out_stats, stats)
    return stats
