"""Records from JSON or JSON Lines files, with errors that name the file and line."""

from __future__ import annotations

import json
import pathlib


def read_records(path: pathlib.Path) -> list[object]:
    """The records of a JSON file (a list) or a JSON Lines file (``.jsonl``, blank lines skipped); ValueError
    names the file and, for JSON Lines, the line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from None
        return records
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); JSON Lines files must end in .jsonl") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: must hold a JSON list of records, got {type(records).__name__}")
    return records
