"""Run folders: claimed atomically, never shared, and the only place training deletes anything.

A run folder is ``out/name`` marked by the file :data:`MARKER`. :func:`claim` creates it exclusively
(``mkdir``, then the marker with ``O_EXCL``) while holding an ``flock`` on the folder for the life of the
process, so two runs started at once never share one: a named run's loser gets a one-line error, an unnamed
one takes the next free ``<name>_2``, ``<name>_3``, .... A run is replaced (``overwrite``) by building the new
one in a hidden sibling folder that :meth:`RunFolder.commit` swaps in once it holds its first checkpoint, so a
replacement that fails leaves the old run as it was. :func:`resume_target` continues a run in its folder, or
starts a new folder for a checkpoint that lies outside a run folder.

Training deletes only the entries it writes (:data:`ENTRIES` and ``eval_*`` reports), only in a folder that
holds the marker, and removes the folder itself only if it created it.
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

from pckeypoints.errors import PCKeypointsError

try:
    import fcntl
except ImportError:  # Windows: no locks, the exclusive creation still holds
    fcntl = None

__all__ = ["ENTRIES", "MARKER", "RunFolder", "claim", "continued_in_place", "is_run_folder", "resume_target"]

#: The file that marks a folder as a pckeypoints run folder.
MARKER = ".pckeypoints-run"
#: Checkpoints that hold a run's whole training state.
CHECKPOINTS = ("last.pt", "best.pt")
#: Temporary files of atomic writes (:func:`~pckeypoints.train.checkpoint.save_checkpoint`, ``log.csv``).
TEMPORARY = ("last.tmp", "best.tmp", "log.tmp")
#: Everything training writes into a run folder, besides ``eval_*`` reports.
ENTRIES = (MARKER, *CHECKPOINTS, *TEMPORARY, "log.csv", "tensorboard")


class RunFolder:
    """A run folder held by this process. ``path`` is where the run writes now, ``target`` where it ends up
    (they differ while an ``overwrite`` run is built aside); ``new``: a run started in this process."""

    def __init__(self, path: Path, lock: int | None, created: list[Path], new: bool, target: Path | None = None,
                 replaced_lock: int | None = None):
        self.path, self.target, self.new = path, target or path, new
        self._lock, self._created, self._replaced_lock = lock, created, replaced_lock
        self.committed = not new
        #: where :meth:`commit` moves the replaced run before deleting it (named by the claiming process)
        self.old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")

    @property
    def name(self) -> str:
        return self.target.name

    def commit(self) -> Path:
        """Call after each checkpoint write: the first one swaps an ``overwrite`` run into the place of the old
        one (which is then deleted). Returns the folder to write into from now on."""
        if self.committed:
            return self.path
        if self.path != self.target:
            old = self.old
            if self.target.exists():
                os.rename(self.target, old)
            try:
                os.rename(self.path, self.target)
            except BaseException:
                if old.exists():
                    os.rename(old, self.target)
                raise
            self.path = self.target
            if old.exists():
                _delete_run(old)
            _unlock(self._replaced_lock)
        self.committed = True
        return self.path

    def for_process(self) -> "RunFolder":
        """This folder for a training process that this one started (it writes and commits; this process holds
        the locks and, after the training processes end, :meth:`settle` s and closes or abandons)."""
        folder = RunFolder(self.path, None, [], self.new, self.target)
        folder.committed, folder.old = self.committed, self.old
        return folder

    def settle(self) -> None:
        """Learn from the disk what a training process did with this folder (see :meth:`for_process`): a run
        that has a checkpoint, or was swapped into its target, is committed (a swap that a kill cut short is
        finished or undone); else it stays uncommitted, for :meth:`abandon` to remove."""
        if self.committed:
            return
        if self.path == self.target:
            self.committed = any((self.path / name).is_file() for name in CHECKPOINTS)
        elif not self.path.exists() and is_run_folder(self.target):  # swapped in
            self.path, self.committed = self.target, True
            if self.old.exists():
                _delete_run(self.old)
            _unlock(self._replaced_lock)
        elif self.old.exists() and not self.target.exists():  # killed between the two renames: undo the first
            os.rename(self.old, self.target)

    def abandon(self) -> None:
        """After a failure: a run with no checkpoint yet is removed (what it wrote, the folders it created);
        an ``overwrite`` run's old run stays as it was."""
        if not self.committed:
            _delete_entries(self.path)
            for folder in self._created:
                try:
                    folder.rmdir()  # only if empty: nothing of anyone else's is deleted
                except OSError:
                    break
            _unlock(self._replaced_lock)
        _unlock(self._lock)

    def close(self) -> None:
        """Release the folder at the end of the run."""
        _unlock(self._lock)

    def remove_stale(self, reports: bool) -> None:
        """Delete the temporary files of writes a kill interrupted, and with ``reports`` the ``eval_*`` reports."""
        _delete_entries(self.path, TEMPORARY, reports)


def is_run_folder(path: Path) -> bool:
    """A folder with the marker. A folder holding checkpoints and ``log.csv`` without it (a backup, a copy, a
    run of an old version) is the user's: it is neither continued in nor replaced."""
    return path.is_dir() and (path / MARKER).is_file()


def claim(out: str | Path, name: str, numbered: bool = False, overwrite: bool = False) -> RunFolder:
    """Claim the new run folder ``out/name``; ``numbered``: the first free one of ``name``, ``name_2``, ...;
    ``overwrite``: replace the run at ``out/name`` once the new one has its first checkpoint."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PCKeypointsError(f"out {out} is a file, not a folder")
    created = _make_parents(out)
    _clean_hidden(out)
    try:
        if numbered:
            for suffix in range(1, 1_000_000):
                try:
                    return _claim_one(out / (name if suffix == 1 else f"{name}_{suffix}"), created)
                except _Taken:
                    continue
        target = out / name
        if overwrite and _occupied(target):
            return _claim_aside(target, created)
        try:
            return _claim_one(target, created)
        except _Taken:
            raise PCKeypointsError(f"run folder {target} already exists; pass --overwrite to replace it, "
                                   f"--resume {target} to continue it, or choose another --name") from None
    except BaseException:
        _remove_empty(created)
        raise


def resume_target(resume: str | Path, out: str, name: str) -> RunFolder:
    """The folder to continue ``resume`` (a run folder or checkpoint file) in: its run folder, held by this
    process; or, for a checkpoint outside a run folder, a new one (``out/name``, numbered if taken)."""
    folder = continued_in_place(resume)
    if folder is None:
        return claim(out, name, numbered=True)
    return RunFolder(folder, _lock(folder), [], new=False)


def continued_in_place(resume: str | Path) -> Path | None:
    """The run folder that ``resume`` (a run folder or checkpoint file) continues in, or None: a new one."""
    resume = Path(resume)
    folder = resume if resume.is_dir() else resume.parent
    if not is_run_folder(folder) or (not resume.is_dir() and resume.name not in CHECKPOINTS):
        return None
    return folder


# ---------------------------------------------------------------------------------------------- internals
class _Taken(Exception):
    pass


def _claim_one(path: Path, created: list[Path]) -> RunFolder:
    """Create ``path`` (or take it if it is an empty folder), lock it and write the marker, or raise _Taken."""
    try:
        path.mkdir()
        made = [path]
    except FileExistsError:
        if not path.is_dir():
            raise _Taken from None
        made = []
        if any(path.iterdir()):
            if not _clear_stub(path):
                raise _Taken from None
            made = [path]
    except OSError as err:
        raise PCKeypointsError(f"cannot create run folder {path}: {err.strerror or err}") from None
    try:
        lock = _lock(path)
    except PCKeypointsError:
        raise _Taken from None
    try:
        os.close(os.open(path / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        _unlock(lock)
        raise _Taken from None
    try:
        return RunFolder(path, lock, made + created, new=True)
    except BaseException:  # e.g. Ctrl-C right after the marker: take the claim back
        (path / MARKER).unlink(missing_ok=True)
        _unlock(lock)
        raise


def _claim_aside(target: Path, created: list[Path]) -> RunFolder:
    """Build an ``overwrite`` run in a hidden sibling of the run ``target``, which stays locked until the swap."""
    if not is_run_folder(target):
        raise PCKeypointsError(f"{target} exists and is not a pckeypoints run folder; not overwriting it")
    foreign = sorted(p.name for p in target.iterdir() if p.name not in ENTRIES and not p.name.startswith("eval_"))
    if foreign:
        raise PCKeypointsError(f"run folder {target} holds {foreign[0]!r}, which pckeypoints did not write; "
                               f"move it away to overwrite the run")
    replaced = _lock(target)
    try:
        folder = _claim_one(target.with_name(f".{target.name}.new-{os.getpid()}"), created)
    except BaseException:
        _unlock(replaced)
        raise
    folder.target, folder._replaced_lock = target, replaced
    folder.old = target.with_name(f".{target.name}.old-{os.getpid()}")
    return folder


def _clear_stub(path: Path) -> bool:
    """Empty the run folder ``path`` if it holds no checkpoint and no process holds it (a run killed before its
    first checkpoint, by ``kill -9`` or a power cut, leaves one); whether it is empty now."""
    if not is_run_folder(path) or any((path / name).exists() for name in CHECKPOINTS):
        return False
    try:
        lock = _lock(path)
    except PCKeypointsError:
        return False  # its run is still starting
    try:
        _delete_entries(path)
        return not any(path.iterdir())
    finally:
        _unlock(lock)


_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(?P<kind>new|old)-\d+$")


def _clean_hidden(out: Path) -> None:
    """Remove the hidden folders of ``overwrite`` runs killed (``kill -9``) before they ended: a replacement
    ``.NAME.new-PID`` is deleted; a replaced run ``.NAME.old-PID`` is put back at ``NAME`` if that is missing
    (killed between the swap's two renames), else deleted. Only marked run folders that no process holds."""
    try:
        hidden = [(p, _HIDDEN.match(p.name)) for p in out.iterdir() if p.name.startswith(".")]
    except OSError:
        return
    for path, match in hidden:
        if match is None or path.is_symlink() or not is_run_folder(path):
            continue
        try:
            lock = _lock(path)
        except (PCKeypointsError, OSError):
            continue  # its run goes on
        try:
            target = out / match["name"]
            if match["kind"] == "old" and not os.path.lexists(target):
                os.rename(path, target)
                continue
            _delete_entries(path)
            try:
                path.rmdir()
            except OSError:
                pass  # files of the user's: kept
        except OSError:
            pass
        finally:
            _unlock(lock)


def _occupied(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _lock(folder: Path) -> int | None:
    """An exclusive ``flock`` on ``folder`` (released when the process ends, even by a kill), or a one-line
    error if another process holds it."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise PCKeypointsError(f"run folder {folder} is in use by another pckeypoints process") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _make_parents(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; returns those created, deepest first."""
    missing = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PCKeypointsError(f"cannot create the out folder {out}: {err.strerror or err}") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _delete_entries(folder: Path, entries: tuple[str, ...] = ENTRIES, reports: bool = True) -> None:
    """Delete ``entries`` (and ``reports``: the ``eval_*`` reports) of the marked run ``folder``, nothing else."""
    if not (folder / MARKER).is_file():
        return
    for path in [*(folder / name for name in entries), *(folder.glob("eval_*") if reports else ())]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)


def _delete_run(folder: Path) -> None:
    """Delete a replaced run: its entries, then the folder if nothing else is left (else keep it, warned)."""
    _delete_entries(folder)
    try:
        folder.rmdir()
    except OSError:
        warnings.warn(f"the replaced run's folder {folder} holds files pckeypoints did not write; kept it")
