"""Per-example scores as JSON Lines, written as they come so that an interrupted run loses nothing: a first line
with the run's settings, then one line per example, each flushed to disk when written."""

from __future__ import annotations

import json
import os
import pathlib


class ScoreLog:
    """The scores file of one evaluation run; ``load`` before ``append``."""

    def __init__(self, path: str | os.PathLike, settings: dict) -> None:
        self.path = pathlib.Path(path)
        self.settings = settings

    def load(self) -> dict[str, dict]:
        """Records already in the file, by key (empty for a new file, which gets the settings line).

        ValueError if the file was written with other settings. A torn last line (the run was killed while
        writing it) is cut off: that example is scored again."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")
            return {}
        records: dict[str, dict] = {}
        whole = 0  # bytes of whole lines read
        with self.path.open("rb") as file:
            for number, line in enumerate(file):
                try:
                    record = json.loads(line) if line.endswith(b"\n") else None
                except json.JSONDecodeError:
                    record = None
                if record is None:
                    break
                if number == 0:
                    self._check_settings(record.get("settings") if isinstance(record, dict) else None)
                else:
                    records[record["key"]] = record
                whole += len(line)
        if whole == 0:
            raise ValueError(f"{self.path} is not a scores file (its first line is not a settings line)")
        if whole < self.path.stat().st_size:
            os.truncate(self.path, whole)
        return records

    def append(self, records: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
            file.flush()
            os.fsync(file.fileno())

    def _check_settings(self, found: object) -> None:
        if found != self.settings:
            if not isinstance(found, dict):
                raise ValueError(f"{self.path} is not a scores file (its first line is not a settings line)")
            differ = sorted(k for k in self.settings.keys() | found.keys() if found.get(k) != self.settings.get(k))
            raise ValueError(f"{self.path} holds scores computed with other settings ({', '.join(differ)}); "
                             "pass another --out, or delete it to start again")
