"""RM-Bench examples from JSON or JSONL files (or a Hugging Face dataset name, with ``datasets`` and a network),
checked field by field: ``prompt`` (str), ``chosen`` and ``rejected`` (3 str each, in the styles concise,
detailed plain, detailed markdown), ``domain`` (str; default: the file name, less RM-Bench's ``_filtered``)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .accuracy import STYLES
from .records import read_records


@dataclass(frozen=True)
class Example:
    key: str  # '<domain>/<id>' (the record's id, else its index in its source): unique, names it when resuming
    domain: str
    prompt: str
    chosen: tuple[str, ...]
    rejected: tuple[str, ...]


def load_examples(sources: Sequence[str]) -> list[Example]:
    """All examples of ``sources`` (file paths or dataset names) in order; ValueError names the bad source,
    example and field."""
    examples: list[Example] = []
    for source in sources:
        records, default_domain = _read(source)
        examples.extend(_check(record, i, source, default_domain) for i, record in enumerate(records))
    seen: set[str] = set()
    for example in examples:
        if example.key in seen:
            raise ValueError(f"two examples share the key {example.key!r} (domain/id); ids must be unique per domain")
        seen.add(example.key)
    if not examples:
        raise ValueError(f"no examples in {list(sources)}")
    return examples


def _read(source: str) -> tuple[Iterable[object], str]:
    path = pathlib.Path(source)
    if path.is_file():
        return read_records(path), path.stem.removesuffix("_filtered")
    if path.exists():
        raise ValueError(f"{source}: not a file")
    if path.suffix in (".json", ".jsonl"):
        raise ValueError(f"{source}: no such file")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{source}: no such file; to read it as a Hugging Face dataset name, "
                         "install the datasets package") from None
    return datasets.load_dataset(source, split="train"), source


def _check(record: object, index: int, source: str, default_domain: str) -> Example:
    where = f"{source}: example {index}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: must be a JSON object, got {type(record).__name__}")
    for field in ("prompt", "chosen", "rejected"):
        if field not in record:
            raise ValueError(f"{where}: missing field {field!r}")
    if not isinstance(record["prompt"], str):
        raise ValueError(f"{where}: field 'prompt' must be a string, got {type(record['prompt']).__name__}")
    for field in ("chosen", "rejected"):
        value = record[field]
        if not isinstance(value, list) or len(value) != STYLES or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: field {field!r} must be a list of {STYLES} strings")
    domain = record.get("domain", default_domain)
    if not isinstance(domain, str) or not domain:
        raise ValueError(f"{where}: field 'domain' must be a non-empty string, got {domain!r}")
    ident = record.get("id", index)
    if not isinstance(ident, (int, str)) or isinstance(ident, bool):
        raise ValueError(f"{where}: field 'id' must be an int or a string, got {ident!r}")
    return Example(f"{domain}/{ident}", domain, record["prompt"], tuple(record["chosen"]), tuple(record["rejected"]))
