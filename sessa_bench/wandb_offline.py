"""Read an offline W&B run back from its transaction log (`<run>/wandb/offline-run-*/run-<id>.wandb`).

wandb 0.31 no longer ships a Python reader for this file (the old `wandb.sdk.internal.datastore` moved into
the Go `wandb-core`), so this module reads the container itself and decodes each record with wandb's own
protobuf message, `wandb.proto.wandb_internal_pb2.Record`. The container is LevelDB's log format behind a
7-byte W&B header (":W&B", magic 0xBEE1 little-endian, version 0): 32 KiB blocks of records, each a 7-byte
header (CRC32-C, uint16 length, uint8 type: 1 full, 2 first, 3 middle, 4 last) and its payload; a block
tail shorter than a header is zero padding. Checksums are not verified (the stdlib has no CRC32-C).

Used by the tests and by `sessa-bench wandb sync` (which runs a folder holds) without any network.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: str | Path) -> list[bytes]:
    """The record payloads of one .wandb file, in write order."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path} is not a W&B transaction log (header {data[:7]!r}, expected {HEADER!r})")
    out, pos, pending = [], len(HEADER), b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block tail too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += BLOCK - pos % BLOCK
            continue
        chunk = data[pos + 7: pos + 7 + length]
        if len(chunk) < length:
            break  # a record cut off by a crash: the run ends before it
        pos += 7 + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos - 7 - length}")
    return out


@dataclass
class OfflineRun:
    """What one offline W&B run holds: its identity, config, history rows and final summary."""
    path: Path
    id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None


def _items(items) -> dict:
    # An item is a key (or a nested key path) and its JSON value.
    out = {}
    for it in items:
        key = "/".join(it.nested_key) if it.nested_key else it.key
        out[key] = json.loads(it.value_json)
    return out


def _apply(target: dict, record) -> None:
    """A config or summary record (or the run record's copy of one): its updates, then its removals."""
    target.update(_items(record.update))
    for it in record.remove:
        target.pop(it.key, None)


def read(path: str | Path) -> OfflineRun:
    """Read one .wandb file (or the offline-run-* folder that holds exactly one)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if len(files) != 1:
            raise ValueError(f"{path}: expected one .wandb file, found {len(files)}")
        path = files[0]
    run = OfflineRun(path)
    for raw in payloads(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.id, run.project, run.group, run.name = r.run_id, r.project, r.run_group, r.display_name
            run.tags = list(r.tags)
            _apply(run.config, r.config)
            _apply(run.summary, r.summary)
        elif kind == "config":
            _apply(run.config, rec.config)
        elif kind == "history":
            run.history.append(_items(rec.history.item))
        elif kind == "summary":
            _apply(run.summary, rec.summary)
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    run.config.pop("_wandb", None)  # wandb's own bookkeeping
    return run
