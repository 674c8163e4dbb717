"""`kimi ask --each FILE... PROMPT`: one prompt over many files, one engine (one model load) for all.

Each file is planned, loaded and answered alone, in the order given; a folder is one question
about all its files (a group: its visible files in name order). A file that fails (bad media,
a prompt too long for the context, a generation error) becomes an error record and the run goes
on. Records are dicts (`file`, `answer`, `thinking`, `usage`, `timings`, `error`, ...) handed to a
sink as they finish, and appended to `--output` (one JSON line each, written with one `write` on
an `O_APPEND` descriptor, then flushed and fsynced) so that a crash or Ctrl-C loses nothing done.

Resume: run again with the same `--output` and the files already recorded without an error (same
path, size and modification time) are skipped; files recorded with an error are tried again. A
torn last line (a crash mid-write) is ignored and the next record starts on a fresh line.

The engine is made on the first file that needs it: a run with nothing left to do loads nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kimi_cli.errors import GenerationError, KimiError, MediaError, UsageError
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, Notice, ThinkingDelta
from kimi_cli.textsafe import json_loads, json_safe

#: Exit codes of a run with failures: any generation failure wins over media failures, then usage.
EXIT_ORDER = (GenerationError.exit_code, MediaError.exit_code, UsageError.exit_code)


class Sink(Protocol):
    """Where a batch's progress and records go (the CLI's progress bar and stdout)."""

    def start(self, total: int, skipped: int) -> None:
        """`total` files to run now (after `skipped` already done)."""

    def begin(self, file: str) -> None:
        """A file starts."""

    def notice(self, file: str, event: Notice) -> None:
        """A warning or note while answering `file`."""

    def record(self, record: dict[str, Any]) -> None:
        """A file's finished record (an answer or an error)."""

    def close(self) -> None:
        """The run is over (also after Ctrl-C)."""


@dataclass(frozen=True)
class BatchJob:
    """What to run: the files, the prompt, and how to turn one file into a request."""

    files: tuple[str, ...]
    prompt: str
    #: file -> (Request, notes); raises KimiError for a file that cannot be used.
    prepare: Callable[[str], tuple[Any, tuple[str, ...]]]
    #: Makes the engine (called once, on the first file that needs it).
    make_engine: Callable[[], Any]
    output: str | None = None


@dataclass
class BatchSummary:
    """How the run went: counts, and the exit code."""

    done: int = 0
    failed: list[int] = field(default_factory=list)  # exit codes of the failed files
    skipped: int = 0
    cancelled: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every file was answered; else 130 (Ctrl-C), 1, 3 or 2 (see `EXIT_ORDER`)."""
        if self.cancelled:
            return 130
        for code in EXIT_ORDER:
            if code in self.failed:
                return code
        return max(self.failed, default=0)


def file_key(spec: str) -> dict[str, Any]:
    """What identifies an input across runs: its absolute path (with any `:pages` suffix), size and
    modification time; for a folder (a group) the total size and latest time of its files."""
    try:
        files = group_files(spec) if os.path.isdir(spec) else [_path_of(spec)]
    except MediaError:
        files = []
    size: int | None = 0 if files else None
    mtime: int | None = 0 if files else None
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            size = mtime = None
            break
        size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)  # type: ignore[operator]
    key = {"path": os.path.abspath(spec), "size": size, "mtime_ns": mtime}
    return {**key, "files": len(files)} if os.path.isdir(spec) else key


def _path_of(spec: str) -> str:
    """`report.pdf` of `report.pdf:1-3` (when only the part before the colon exists)."""
    base = spec.rsplit(":", 1)[0]
    return base if ":" in spec and not os.path.exists(spec) and os.path.exists(base) else spec


def group_files(spec: str) -> list[str]:
    """The inputs of one question: a folder's visible regular files in name order, else the spec itself."""
    if not os.path.isdir(spec):
        return [spec]
    try:
        names = sorted(n for n in os.listdir(spec) if not n.startswith("."))
    except OSError as exc:
        raise MediaError(f"{spec}: cannot list the folder: {exc.strerror or exc}") from None
    files = [os.path.join(spec, n) for n in names if os.path.isfile(os.path.join(spec, n))]
    if not files:
        raise MediaError(f"{spec}: the folder has no files", hint="--each takes files, or folders of files")
    return files


class ResultLog:
    """`--output FILE`: the records of earlier runs (to skip) and durable appends of new ones."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._done: set[str] = set()
        self._needs_newline = False
        self._read()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _read(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UsageError(f"--output {self.path}: cannot read: {exc.strerror or exc}") from None
        self._needs_newline = bool(data) and not data.endswith(b"\n")
        for line in data.splitlines():
            try:
                record = json_loads(line)
            except ValueError:
                continue  # a torn line from a crash: that file is simply run again
            if isinstance(record, dict) and record.get("error") is None and isinstance(record.get("key"), dict):
                self._done.add(json.dumps(record["key"], sort_keys=True))

    def is_done(self, key: dict[str, Any]) -> bool:
        """Whether a record for this exact file (path, size, mtime) finished without an error."""
        return json.dumps(key, sort_keys=True) in self._done

    def append(self, record: dict[str, Any]) -> None:
        """Write one JSON line in one write, then flush it to the disk."""
        line = json.dumps(json_safe(record), ensure_ascii=False) + "\n"
        if self._needs_newline:
            line, self._needs_newline = "\n" + line, False
        os.write(self._fd, line.encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def run_batch(job: BatchJob, sink: Sink) -> BatchSummary:
    """Answer `job.prompt` for each file in turn; records go to `sink` and `--output` as they finish."""
    log = ResultLog(job.output) if job.output else None
    summary = BatchSummary()
    todo = [f for f in job.files if log is None or not log.is_done(file_key(f))]
    summary.skipped = len(job.files) - len(todo)
    engine = None
    sink.start(len(todo), summary.skipped)
    try:
        for file in todo:
            sink.begin(file)
            record, engine = _one(job, file, engine, sink)
            if record is None:  # Ctrl-C: this file is not done, nothing is recorded for it
                summary.cancelled = True
                break
            if log is not None:
                log.append(record)
            sink.record(record)
            error = record["error"]
            summary.done += error is None
            if error is not None:
                summary.failed.append(error["exit_code"])
    except KeyboardInterrupt:
        summary.cancelled = True
    finally:
        sink.close()
        if log is not None:
            log.close()
        if engine is not None:
            engine.close()
    return summary


def _one(job: BatchJob, file: str, engine: Any, sink: Sink) -> tuple[dict[str, Any] | None, Any]:
    """One file's record (None when cancelled), and the engine (made here when first needed)."""
    base = {"file": file, "key": file_key(file)}
    try:
        request, notes = job.prepare(file)
    except KimiError as exc:
        return _error_record(base, exc.message, exc.hint, exc.exit_code), engine
    for text in notes:
        sink.notice(file, Notice(text, "warning"))
    if engine is None:
        engine = job.make_engine()
    return _answer(base, engine, request, lambda e: sink.notice(file, e)), engine


def _answer(base: dict[str, Any], engine: Any, request: Any, notice: Callable[[Notice], None]) -> dict[str, Any] | None:
    from kimi_cli.app.turn import stream_events

    thinking: list[str] = []
    answer: list[str] = []
    end: Any = None
    for event in stream_events(engine, request):
        if isinstance(event, ThinkingDelta):
            thinking.append(event.text)
        elif isinstance(event, AnswerDelta):
            answer.append(event.text)
        elif isinstance(event, Notice):
            notice(event)
        elif isinstance(event, (Finished, ErrorEvent)):
            end = event
    if isinstance(end, Finished) and end.stop_reason == "cancelled":
        return None
    if not isinstance(end, Finished):
        message = end.message if isinstance(end, ErrorEvent) else "generation ended without a result"
        hint = end.hint if isinstance(end, ErrorEvent) else None
        code = end.exit_code if isinstance(end, ErrorEvent) else GenerationError.exit_code
        return _error_record(base, message, hint, code, "".join(thinking), "".join(answer))
    timings = end.timings_record()
    return {**base, "answer": "".join(answer), "thinking": "".join(thinking), "stop_reason": end.stop_reason,
            "thinking_truncated": end.thinking_truncated, "usage": asdict(end.usage), "timings": timings,
            "error": None}


def _error_record(base: dict[str, Any], message: str, hint: str | None, code: int, thinking: str | None = None,
                  answer: str | None = None) -> dict[str, Any]:
    return {**base, "answer": answer, "thinking": thinking, "stop_reason": "error", "thinking_truncated": False,
            "usage": None, "timings": None, "error": {"message": message, "hint": hint, "exit_code": code}}


def each_files(files: Iterable[str]) -> tuple[str, ...]:
    """The `--each` files, checked: at least one, and no `-` (stdin is one stream, not one per file)."""
    files = tuple(files)
    if not files:
        raise UsageError("--each needs at least one file", hint='kimi ask --each *.png "Describe this"')
    if "-" in files:
        raise UsageError("--each cannot read a file from stdin (-)", hint="name the files")
    return files
