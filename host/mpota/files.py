"""Writing the tools' output files whole or not at all: each goes to a temporary file beside
its destination and is renamed into place only when everything the command writes is ready, so
that a command that fails leaves the directory as it was."""

from __future__ import annotations

import os
from pathlib import Path


def _check_dir(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(parent))
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory", str(path))


class Staged:
    """Files written as temporaries and renamed into place together by commit(); dropped by
    discard() (or on leaving a `with` block by an exception). Use:

        with Staged() as out:
            out.write(path, data)   # checked now: its directory exists, it is not a directory
            ...                     # anything that raises leaves none of the files behind
    """

    def __init__(self):
        self.files: list[tuple[Path, Path]] = []

    def write(self, path: str | Path, data: bytes | str, mode: int | None = None) -> Path:
        """Stage `data` for `path`; `mode` (e.g. 0o600) the file's permissions, else the
        umask's."""
        path = Path(path)
        _check_dir(path)
        if any(dest == path for _, dest in self.files):
            raise ValueError(f"{path}: written twice by one command")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.files.append((tmp, path))
        if isinstance(data, str):
            data = data.encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def commit(self) -> None:
        for tmp, path in self.files:
            os.replace(tmp, path)
        self.files = []

    def discard(self) -> None:
        for tmp, _ in self.files:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.files = []

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write(path: str | Path, data: bytes | str) -> None:
    """One file, written whole or not at all."""
    with Staged() as out:
        out.write(path, data)
