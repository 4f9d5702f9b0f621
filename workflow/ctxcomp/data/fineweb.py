"""FineWeb (or a local web-text JSONL) cut into reconstruction chunks: an L-token segment plus its continuation.

Why it is built this way:
- Chunks are cut in the tokens of the pipeline's chunk tokenizer and `text` is decoded from exactly L of them, so a
  segment is L tokens for that tokenizer, not "about L words". Within a document, chunks are consecutive and never
  overlap (neither segments nor continuations), so no training text is seen twice through an overlap.
- A chunk is a WINDOW of the document, `text + continuation`: every compressor re-cuts it at exactly L of its own
  tokens (model/collate.py Collator.window_split), the reconstruction target is that text and the continuation
  starts right after it. So the window must hold L + min_continuation_tokens tokens of every model family's
  tokenizer (`families`): a window too short for one family is dropped for all (counted per family), so every cell
  trains and evaluates on the same chunks. The stats give, per family, how many chunk-tokenizer (decoder) tokens
  its L-token segments span on the evaluation chunks: the effective ratio in decoder tokens per memory vector is
  rho x `decoder_tokens_per_segment` / L.
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
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from ..config import fill_section
from ..io import provenance, write_json
from .readers import ErrorLog, hub_rows, iter_rows, resolve_path
from .records import stable_unit, text_key, write_records

log = logging.getLogger(__name__)

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
    fw = fill_section("data.fineweb", fw)
    field = fw["text_field"]
    schema = {"type": "object", "required": [field], "properties": {field: {"type": "string"}}}
    if fw["source"] == "hub":
        if fw.get("data_files"):
            hub_kwargs = {"data_files": fw["data_files"], **hub_kwargs}
        rows = hub_rows(fw["path"], fw["split"], fw.get("name"), streaming=True, schema=schema,
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


class FamilyCheck:
    """Whether a chunk window holds `need` tokens for every family tokenizer; counts the windows each one fails.

    `tokenizers` maps a tokenizer source to (the families it stands for, the loaded tokenizer): families that share a
    tokenizer are checked once.
    """

    def __init__(self, tokenizers: dict[str, tuple[list[str], Any]], need: int) -> None:
        self.tokenizers, self.need = tokenizers, need
        self.too_short = {fam: 0 for fams, _ in tokenizers.values() for fam in fams}
        self.dropped = 0  # windows too short for at least one family

    def keep(self, windows: list[str]) -> list[bool]:
        ok = [True] * len(windows)
        if not windows:
            return ok
        for fams, tok in self.tokenizers.values():
            lens = [len(x) for x in tok(windows, add_special_tokens=False, verbose=False)["input_ids"]]
            for i, n in enumerate(lens):
                if n < self.need:  # counted under every family it is too short for
                    ok[i] = False
                    for fam in fams:
                        self.too_short[fam] += 1
        self.dropped += ok.count(False)
        return ok


def iter_chunked(docs: Iterable[tuple[str, str]], tokenizer: Any, segment_tokens: int, continuation_tokens: int,
                 batch_docs: int = BATCH_DOCS,
                 families: FamilyCheck | None = None) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(doc_id, [(segment text, continuation text), ...]) per document; tokenizes and decodes in batches.

    With `families`, a chunk whose window (text + continuation) is too short for some family is left out.
    """
    for batch in _batched(docs, batch_docs):
        enc = tokenizer([t for _, t in batch], add_special_tokens=False, verbose=False)["input_ids"]
        pieces, spans = [], []
        for ids in enc:
            sp = chunk_spans(len(ids), segment_tokens, continuation_tokens)
            spans.append(len(sp))
            for a, b, c in sp:
                pieces += [ids[a:b], ids[b:c]]
        texts = tokenizer.batch_decode(pieces, clean_up_tokenization_spaces=False) if pieces else []
        pairs = [(texts[2 * i], texts[2 * i + 1]) for i in range(len(texts) // 2)]
        keep = families.keep([a + b for a, b in pairs]) if families else [True] * len(pairs)
        k = 0
        for (doc_id, _), n in zip(batch, spans):
            yield doc_id, [pairs[k + i] for i in range(n) if keep[k + i]]
            k += n


class ChunkSelector:
    """Applies the filters, the document-level split and the quotas, counting every decision."""

    def __init__(self, train_quota: int, eval_quota: int, seed: int, min_chars: int, eval_fraction: float,
                 eval_chunks_per_doc: int) -> None:
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


def _family_tokenizers(families: dict[str, str] | None) -> dict[str, tuple[list[str], Any]]:
    """{tokenizer source: (families, tokenizer)} of the `families` map {family: tokenizer source}."""
    by_src: dict[str, list[str]] = {}
    for fam, src in sorted((families or {}).items()):
        by_src.setdefault(str(src), []).append(fam)
    return {src: (fams, load_tokenizer(src)) for src, fams in by_src.items()}


def family_stats(check: FamilyCheck | None, eval_records: list[dict], chunk_tok: Any, L: int) -> dict:
    """Per family: windows dropped as too short, and on the eval chunks the chunk-tokenizer (decoder) tokens spanned
    by its L-token segment (`decoder_tokens_per_segment`) and their ratio to L (`decoder_tokens_per_L`)."""
    out: dict[str, dict] = {}
    if check is None:
        return out
    for src, (fams, tok) in check.tokenizers.items():
        spans, exact = [], 0
        for r in eval_records:
            ids = tok(r["text"] + r["continuation"], add_special_tokens=False)["input_ids"]
            seg = tok.decode(ids[:L], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            exact += len(ids[:L]) == L
            spans.append(len(chunk_tok(seg, add_special_tokens=False)["input_ids"]))
        mean = sum(spans) / len(spans) if spans else None
        for fam in fams:
            out[fam] = {"tokenizer": src, "too_short_dropped": check.too_short[fam],
                        "eval_segments_of_exactly_L": exact, "eval_segments": len(spans),
                        "decoder_tokens_per_segment": mean,
                        "decoder_tokens_per_L": None if mean is None else mean / L}
    return out


def prepare_fineweb(fw: dict, tokenizer: str, segment: dict, seed: int, out_train: str, out_eval: str,
                    out_stats: str, families: dict[str, str] | None = None) -> dict:
    """Write train/eval chunk files (JSONL, schema "chunk") and a stats JSON; return the stats.

    `fw` is the `data.fineweb` config section, `tokenizer` a hub id or local tokenizer dir, `segment` the
    `segment` section (max_segments concerns QA contexts and is not used here), `families` {model family: its
    tokenizer source}: every kept window holds L + min_continuation_tokens tokens of each.
    """
    fw = fill_section("data.fineweb", fw)
    L, C = int(segment["segment_tokens"]), int(segment["continuation_tokens"])
    tok = load_tokenizer(tokenizer)
    sel = ChunkSelector(fw["train_contexts"], fw["eval_contexts"], seed, fw["min_chars"], fw["eval_doc_fraction"],
                        fw["eval_chunks_per_doc"])
    check = FamilyCheck(_family_tokenizers(families), L + min(C, MIN_CONTINUATION_TOKENS)) if families else None
    errors = ErrorLog(f"fineweb source {fw['path']}")
    n_train = write_records(out_train, _train_records(fw, tok, L, C, sel, check, errors), kind="chunk")
    n_eval = write_records(out_eval, sel.eval_records, kind="chunk")
    stats = _stats(fw, tokenizer, tok, L, C, seed, sel, n_train, n_eval)
    stats["family_short_dropped"] = check.dropped if check else 0
    stats["families"] = family_stats(check, sel.eval_records, tok, L)
    if not sel.done:
        log.warning("fineweb: source exhausted before quotas were met: train %d/%d, eval %d/%d",
                    n_train, sel.train_quota, n_eval, sel.eval_quota)
    log.info("fineweb: %s", {k: stats[k] for k in ("docs_read", "chunks_made", "train", "eval")})
    write_json(out_stats, stats)
    return stats


def _train_records(fw: dict, tok: Any, L: int, C: int, sel: ChunkSelector, check: FamilyCheck | None,
                   errors: ErrorLog) -> Iterator[dict]:
    """The training records in reading order (eval records stay in `sel`), until both quotas are met."""
    from tqdm import tqdm

    bar = tqdm(total=sel.train_quota + sel.eval_quota, unit="chunk", desc="fineweb chunks", file=sys.stderr,
               mininterval=10, dynamic_ncols=True)
    try:
        for doc_id, chunks in iter_chunked(iter_documents(fw, errors), tok, L, C, families=check):
            before = len(sel.eval_records)
            out = sel.add(doc_id, chunks)
            bar.update(len(out) + len(sel.eval_records) - before)
            yield from out
            if sel.done:
                break
    finally:
        bar.close()
    errors.raise_if_any()


def _stats(fw: dict, tokenizer: str, tok: Any, L: int, C: int, seed: int, sel: ChunkSelector, n_train: int,
           n_eval: int) -> dict:
    return {
        "dataset": "fineweb",
        "source": {"source": fw["source"], "path": fw["path"], "name": fw.get("name"), "split": fw["split"],
                   "text_field": fw["text_field"]},
        "tokenizer": tokenizer,
        "tokenizer_class": type(tok).__name__,
        "segment_tokens": L,
        "continuation_tokens": C,
        "min_continuation_tokens": min(C, MIN_CONTINUATION_TOKENS),
        "min_chars": sel.min_chars,
        "seed": seed,
        "eval_doc_fraction": sel.eval_fraction,
        "eval_chunks_per_doc": sel.eval_chunks_per_doc,
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
            "families": "a window (segment + continuation) needs L + min_continuation_tokens tokens of every model "
                        "family's tokenizer, which re-cuts it at L of its own tokens",
            "near_empty": "segment text shorter than min_chars characters (after strip), or empty continuation",
            "duplicates": "exact duplicate of an earlier kept segment after lowercasing and whitespace collapsing",
            "split": "document goes to eval when sha256(seed, doc_id) < eval_doc_fraction and eval is not yet full, "
                     "giving its first eval_chunks_per_doc chunks; other chunks of eval docs and chunks beyond a "
                     "quota are dropped, never moved to the other side",
        },
        "provenance": provenance(),
    }
