"""Data preparation: FineWeb chunks and the QA evaluation sets, normalized to validated record schemas."""
from .conflictqa import load_conflictqa
from .faitheval import load_faitheval
from .fineweb import chunk_spans, iter_documents, load_tokenizer, prepare_fineweb
from .musique import load_musique
from .qa import load_qa, prepare_qa
from .readers import DataError, ErrorLog, Row, iter_rows, read_rows
from .records import SCHEMAS, normalize_text, record_problems, stable_unit, write_records

__all__ = [
    "DataError", "ErrorLog", "Row", "SCHEMAS", "chunk_spans", "iter_documents", "iter_rows", "load_conflictqa",
    "load_faitheval", "load_musique", "load_qa", "load_tokenizer", "normalize_text", "prepare_fineweb", "prepare_qa",
    "read_rows", "record_problems", "stable_unit", "write_records",
]
