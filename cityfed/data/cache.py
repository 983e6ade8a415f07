"""A city's harmonised arrays, read once per run and kept on the city host.

Every message of a run (the moments, each Newton round, the evaluation) needs the
same harmonised rows. Flower starts a fresh ClientApp process for each message
on a deployed node, so a cache in memory would not survive between them: the
arrays are kept as ``.npy`` files (no pickle) in a private folder of the city
node (0700, files 0600), keyed by the run, the federation spec, the city spec
and the identity (device, inode, size, modification time) of the data file. A
changed file or a new run is a miss; a city's entry is dropped after its
evaluation, and entries older than :data:`MAX_AGE_SECONDS` whenever one is
written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cityfed.config.spec import CitySpec, FederationSpec, federation_to_json
from cityfed.data.city_data import CityData, city_data, load_city_data
from cityfed.data.rows import Tally, data_blocks, streamed_blocks
from cityfed.typing import BoolArray, FloatArray

__all__ = ["KEEP_BYTES", "MAX_AGE_SECONDS", "DataCache"]

logger = logging.getLogger(__name__)

#: Entries not used for this long are removed when a new one is written.
MAX_AGE_SECONDS = 24 * 3600.0

#: A city whose harmonised rows take more than this is not kept: each message of
#: the run streams its rows from the source again, in bounded memory.
KEEP_BYTES = 64 << 20

_ARRAYS = ("X_train", "y_train", "X_holdout", "y_holdout")
#: Present only for some federations (the exposure of a Poisson model).
_OPTIONAL_ARRAYS = ("exposure_train", "exposure_holdout")
_META = "meta.json"


def _identity(path: Path) -> list[int]:
    """What changes when the data changes: the file's, or every file's of a folder."""
    stat = path.stat()
    identity = [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]
    if path.is_dir():  # a folder of Parquet files: a part rewritten in place counts
        for child in sorted(path.iterdir()):
            identity += _identity(child) if child.is_file() else []
    return identity


@dataclass(frozen=True)
class DataCache:
    """Harmonised data of the cities of one run on this host.

    Parameters
    ----------
    folder : Path or None
        Where entries live; ``None`` reads the data anew every time.
    run : str
        The run the entries belong to (Flower's run id).
    """

    folder: Path | None
    run: str

    def _key(self, city: CitySpec, fed: FederationSpec) -> str | None:
        try:
            identity = {
                "run": self.run,
                "federation": federation_to_json(fed),
                "city": asdict(city),
                # A database has no file identity: within a run its rows are read once.
                "data": [str(city.data)]
                + ([] if city.database is not None else _identity(city.data)),
            }
        except OSError:
            return None  # a missing file: load_city_data says which, with its message
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def load(self, city: CitySpec, fed: FederationSpec) -> CityData:
        """The city's data: from the cache when this run already read it.

        Raises
        ------
        DataError, SpecError
            As :func:`~cityfed.data.city_data.load_city_data` on a miss.
        """
        key = self._key(city, fed) if self.folder is not None else None
        if self.folder is None or key is None:
            return load_city_data(city, fed)
        entry = self.folder / key
        cached = _read(entry)
        if cached is not None:
            return cached
        data = load_city_data(city, fed)
        try:
            self._write(entry, data)
        except OSError as exc:  # a full or read-only disk costs speed, not the run
            logger.warning("city %s: harmonised data not cached (%s)", city.name, exc)
        return data

    def training(
        self, city: CitySpec, fed: FederationSpec, *, keep: bool = True
    ) -> tuple[Iterator[FloatArray], Tally]:
        """The city's training rows in blocks, and its counts (complete after the blocks).

        From the cache when this run already kept the rows; else streamed from
        the source in bounded memory, and (with ``keep``: the run has further
        messages that read them) kept for the run when they take at most
        :data:`KEEP_BYTES`.

        Raises
        ------
        DataError, SpecError
            As :func:`~cityfed.data.harmonise.harmonised_chunks`, on a miss.
        """
        # Rows a run does not keep were not kept by an earlier message either.
        key = self._key(city, fed) if self.folder is not None and keep else None
        entry = None if self.folder is None or key is None else self.folder / key
        cached = None if entry is None else _read(entry)
        if cached is not None:
            tally = Tally(
                rows_read=cached.rows_read,
                rows_train=int(cached.y_train.size),
                rows_holdout=int(cached.y_holdout.size),
                drop_reasons=Counter(cached.drop_reasons),
            )
            return data_blocks(cached), tally
        tally = Tally()
        if entry is None:  # nothing to keep, or nowhere to keep it
            return streamed_blocks(city, fed, tally), tally
        kept = _Kept()
        blocks = streamed_blocks(city, fed, tally, kept.keep)
        return self._keeping(blocks, tally, kept, entry, city, fed), tally

    def _keeping(
        self,
        blocks: Iterator[FloatArray],
        tally: Tally,
        kept: _Kept,
        entry: Path,
        city: CitySpec,
        fed: FederationSpec,
    ) -> Iterator[FloatArray]:
        yield from blocks
        if kept.parts is None:  # past the budget
            return
        data = kept.data(city.name, fed, tally)
        try:
            self._write(entry, data)
        except OSError as exc:  # a full or read-only disk costs speed, not the run
            logger.warning("city %s: harmonised data not cached (%s)", city.name, exc)

    def forget(self, city: CitySpec, fed: FederationSpec) -> None:
        """Remove the city's entry of this run (after the run's last message)."""
        key = self._key(city, fed) if self.folder is not None else None
        if self.folder is not None and key is not None:
            shutil.rmtree(self.folder / key, ignore_errors=True)

    def _write(self, entry: Path, data: CityData) -> None:
        assert self.folder is not None
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        _expire(self.folder, time.time() - MAX_AGE_SECONDS)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
        try:
            for name in _ARRAYS + _OPTIONAL_ARRAYS:
                if getattr(data, name) is None:
                    continue
                path = staging / f"{name}.npy"
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    np.save(f, getattr(data, name), allow_pickle=False)
            meta = {
                "city": data.city,
                "features": list(data.features),
                "rows_read": data.rows_read,
                "drop_reasons": dict(data.drop_reasons),
            }
            fd = os.open(staging / _META, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(meta, handle)
            os.rename(staging, entry)  # atomic: readers see a whole entry or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not entry.is_dir():
                raise


class _Kept:
    """The training and holdout rows of a streamed pass, while they fit :data:`KEEP_BYTES`."""

    def __init__(self) -> None:
        self.parts: list[tuple[FloatArray, FloatArray]] | None = []
        self.size = 0

    def keep(self, block: FloatArray, holdout: BoolArray) -> None:
        """Keep one block's rows, or give up keeping (for good) past the budget."""
        if self.parts is None:
            return
        self.size += block.nbytes
        if self.size > KEEP_BYTES:
            self.parts = None
            return
        self.parts.append(
            (np.compress(~holdout, block, axis=0), np.compress(holdout, block, axis=0))
        )

    def data(self, city: str, fed: FederationSpec, tally: Tally) -> CityData:
        """The kept rows as :class:`CityData` (what :func:`load_city_data` gives)."""
        assert self.parts is not None
        train = np.concatenate([t for t, _ in self.parts])
        holdout = np.concatenate([h for _, h in self.parts])
        return city_data(city, fed, train, holdout, tally.rows_read, tally.reasons)


def _read(entry: Path) -> CityData | None:
    try:
        meta = json.loads((entry / _META).read_text(encoding="utf-8"))
        arrays = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
        for name in _OPTIONAL_ARRAYS:
            if (entry / f"{name}.npy").is_file():
                arrays[name] = np.load(entry / f"{name}.npy", allow_pickle=False)
        os.utime(entry)  # still in use: not expired
    except (OSError, ValueError):
        return None
    return CityData(
        city=str(meta["city"]),
        features=tuple(str(f) for f in meta["features"]),
        rows_read=int(meta["rows_read"]),
        drop_reasons={str(k): int(v) for k, v in meta["drop_reasons"].items()},
        **arrays,
    )


def _expire(folder: Path, before: float) -> None:
    for entry in folder.iterdir():
        try:
            stale = entry.stat().st_mtime < before
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
