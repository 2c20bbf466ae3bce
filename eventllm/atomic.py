"""Writing outputs all at once: a file or a folder appears complete, or the previous one stays as it was.

Every command that writes a file or a folder goes through here. A file is written to a temporary sibling
and renamed over the target (`os.replace` is atomic on one file system); a folder is filled in a temporary
sibling folder and swapped in when complete. An error or Ctrl-C before that point removes the temporary
and leaves the old output untouched; the rename itself runs with SIGINT held back, so it cannot be cut in two.

>>> with atomic_path("out/result.json") as tmp:          # doctest: +SKIP
...     tmp.write_text("{}")

Standard library only: the mapper and the simulator (which never import torch) use it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator

from eventllm.errors import OutputError


def _sibling(path: Path, tag: str) -> Path:
    # hidden, unique, and keeping the suffix (matplotlib and numpy pick the format from it)
    return path.with_name(f".{path.stem}.{tag}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT waits until the block is done (a Ctrl-C during a rename is delivered right after it)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the folder for {path} ({e.strerror or e}); choose another output path") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def check_output(path: str | Path, folder: bool = False) -> None:
    """Refuse now, before a long run, an output that `atomic_path` (or, `folder=True`, `atomic_folder`) would refuse
    at its end: a folder where a file goes (a file where a folder goes), or a parent that is a file or not writable."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file; give a folder name for the output")
    if not folder and path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the output")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:  # the folder that would hold the new ones
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create the folder for {path} ({parent} is a file); choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path} (no permission to write in {parent}); choose another output path")
    try:  # what the permission bits do not tell (root in /proc, a read-only mount): make a file there and remove it
        fd, probe = tempfile.mkstemp(prefix=".eventllm-probe-", dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write {path} (a file cannot be made in {parent}: {e.strerror or e}); choose another output "
                          "path") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; on success it replaces `path`, on any error or interrupt it is removed."""
    path = Path(path)
    check_output(path)
    _parent(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        if not tmp.exists():  # the writer added a suffix of its own, or wrote nothing
            raise OutputError(f"nothing was written to {path}")
        with _sigint_held():
            os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e}); choose another output path or free some space") from None
    finally:
        _remove(tmp)


def write_text(path: str | Path, text: str) -> Path:
    """`path` holds `text` afterwards, or (after an error) whatever it held before."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | Path, merge: bool = False) -> Iterator[Path]:
    """A temporary folder to fill; on success it becomes `path`.

    `merge=False`: the folder replaces an old `path` as a whole. `merge=True` (report folders, which may hold
    other files of the user's): each entry of the new folder replaces the entry of the same name in `path`.
    """
    path = Path(path)
    check_output(path, folder=True)
    _parent(path)
    tmp = _sibling(path, "tmp")
    old = _sibling(path, "old")
    try:
        tmp.mkdir()
        yield tmp
        with _sigint_held():
            if not path.exists():
                os.rename(tmp, path)
            elif not merge:
                os.rename(path, old)
                os.rename(tmp, path)
            else:
                for entry in sorted(tmp.iterdir()):
                    target = path / entry.name
                    if target.is_dir() and not target.is_symlink():
                        os.rename(target, old)
                        os.rename(entry, target)
                        _remove(old)
                    else:
                        os.replace(entry, target)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e}); choose another output folder or free some space") from None
    finally:
        _remove(tmp)
        _remove(old)
