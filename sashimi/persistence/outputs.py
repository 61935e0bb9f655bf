"""Claiming output locations before the work, so that two runs never both write the same file.

A check that a file does not exist, made at the start of a run, does not stop a second run started
at the same time: both pass it, and both report success for files that hold one run's data. So:

- :class:`OutputFiles` claims each output file by creating ``<file>.part`` exclusively
  (``O_CREAT | O_EXCL``) before any work: a second run asking for the same file fails at once, and
  an unwritable place is found before anything is computed. The result is written into the
  ``.part`` file and then published under the final name: without ``force`` by a hard link, which
  fails rather than replace a file that appeared meanwhile; with ``force`` by a rename over it.
  A half-written file never carries the final name. The claiming process holds an advisory lock
  on each ``.part`` file it claimed until it is published or released, so a ``.part`` left by a
  process that no longer runs (killed by SIGKILL, a power cut) is recognised as abandoned and taken
  over by the next run, instead of blocking it forever. A file that appears under a final name
  while the run works is kept, and so is this run's result, under a free name beside it.
- :class:`RunLock` holds an advisory lock on a directory (``fcntl.flock``; ``msvcrt.locking`` on
  Windows) for the whole of a run, e.g. a training run's ``checkpoint_path``. The lock ends with the
  process, so a killed run never blocks the next one.
"""
from __future__ import annotations

import errno
import importlib.util
import os
from typing import Callable, Sequence

from ..errors import OutputError

__all__ = ["OutputFiles", "RunLock", "OutputError"]


class OutputFiles:
    """Output files claimed for one run (use as a context manager: unpublished claims are removed).

    Args:
        paths: the files the run will write.
        force: replace files that exist (else they are refused, now and when publishing).

    Raises:
        OutputError: a file exists (without ``force``), another run is writing it (its ``.part``
            exists), or it cannot be created where it should go. Nothing is left claimed.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], force: bool = False):
        self.force, self.paths, self._claimed, self._locks = force, [], [], {}
        self.claim(paths)

    def claim(self, paths: Sequence[str | os.PathLike]) -> None:
        """Claim more files (e.g. once a loaded model says how many); on failure none of ``paths``
        stays claimed (the earlier claims do).

        Raises:
            OutputError: as the constructor.
        """
        paths = [os.fspath(p) for p in paths]
        done = []
        try:
            _allow_open_files(len(self._claimed) + len(paths))
            for path in paths:
                self._claim(path)
                done.append(path)
        except BaseException:
            for path in done:
                self._drop(self.part(path), remove=True)
            raise
        self.paths += paths

    def _claim(self, path: str) -> None:
        if not self.force and os.path.lexists(path):
            raise OutputError(f"{path} exists; use -f to overwrite")
        part = path + ".part"
        for _ in range(10):  # retried only when a .part vanished between two steps of another run
            try:
                fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
            except FileExistsError:
                fd = self._take_over(path, part)
                if fd is None:
                    continue
            except OSError as e:
                raise OutputError(f"{path}: cannot write there ({e.strerror or e})") from e
            else:
                _lock(fd)
            self._claimed.append(part)
            self._locks[part] = fd
            return
        raise OutputError(f"{part}: could not claim it (other runs keep creating and removing it)")

    @staticmethod
    def _take_over(path: str, part: str) -> int | None:
        """The fd of an abandoned ``part`` (its claimant no longer runs), locked; None if it vanished;
        else OutputError (a live run holds it)."""
        if not _LOCKS:  # no way to tell an abandoned claim from a live one: refuse, as before
            raise OutputError(f"{part} exists: another run is writing {path} now, or an interrupted one left it "
                              "behind (delete it if no run is writing there)")
        try:
            fd = os.open(part, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OutputError(f"{path}: cannot write there ({e.strerror or e})") from e
        if not _lock(fd):
            os.close(fd)
            raise OutputError(f"{part} exists: another run is writing {path} now (a process that still runs holds it)")
        try:  # the claimant may have published or released it as we opened it: claim afresh then
            same = os.path.samestat(os.fstat(fd), os.stat(part))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)  # a run that no longer runs (SIGKILL, a power cut) left it: ours now
        return fd

    def _drop(self, part: str, remove: bool) -> None:
        """Forget a claim (removing its ``.part`` first, while still locked, if ``remove``)."""
        if remove:
            try:
                os.unlink(part)
            except OSError:
                pass
        fd = self._locks.pop(part, None)
        if fd is not None:
            os.close(fd)
        if part in self._claimed:
            self._claimed.remove(part)

    def part(self, path: str | os.PathLike) -> str:
        """The claimed temporary file to write ``path``'s contents into."""
        return os.fspath(path) + ".part"

    def publish(self, path: str | os.PathLike, write: Callable[[str], None] | None = None) -> None:
        """Give the claimed file its final name.

        Args:
            path: one of the claimed paths.
            write: if given, called with the ``.part`` path first, to write the contents.

        Raises:
            OutputError: without ``force``, ``path`` appeared since it was claimed (written by
                something that did not claim it): it is kept, and so is this run's ``.part``.
        """
        path = os.fspath(path)
        part = self.part(path)
        if part not in self._claimed:
            raise ValueError(f"OutputFiles.publish: {path} was not claimed")
        if write is not None:
            write(part)
        if self.force:
            os.replace(part, path)
        elif not _link_new(part, path):
            # something that did not claim it wrote the file meanwhile: keep both, never delete a result
            root, ext = os.path.splitext(path)
            for k in range(1, 10000):
                kept = f"{root}-{k}{ext}"
                if _link_new(part, kept):
                    break
            else:
                kept = part
            if kept != part:
                os.unlink(part)
            self._drop(part, remove=False)
            raise OutputError(f"{path} appeared while this run was working (something else wrote it); it is kept, "
                              f"and this run's result is {kept}")
        else:
            os.unlink(part)
        self._drop(part, remove=False)

    def release(self) -> None:
        """Remove the claims not published (their ``.part`` files)."""
        for part in list(self._claimed):
            self._drop(part, remove=True)

    def __enter__(self) -> "OutputFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunLock:
    """An exclusive lock on a directory, held until :meth:`release` (or the process ends).

    The directory is created if missing; the lock file ``.sashimi-run.lock`` in it holds the
    holder's process id, for the message another run gets.

    Args:
        directory: the run's output directory.
        what: how to name the directory in messages (e.g. "checkpoint_path runs/a").

    Raises:
        OutputError: another process holds the lock, or the directory cannot be created or
            written to.
    """

    NAME = ".sashimi-run.lock"

    def __init__(self, directory: str | os.PathLike, what: str | None = None):
        directory = os.fspath(directory)
        what = what or directory
        self.path = os.path.join(directory, self.NAME)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{what}: cannot create the directory ({e.strerror or e})") from e
        for _ in range(10):  # retried only if the file was replaced between opening and locking it
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
            except OSError as e:
                raise OutputError(f"{what}: cannot write there ({e.strerror or e})") from e
            if not _try_lock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                raise OutputError(f"{what} is in use by another run{f' (process {holder})' if holder else ''}; "
                                  "use another directory, or wait for that run to end")
            try:  # the holder before us may have removed the file as we opened it: lock the one in place
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise OutputError(f"{what}: could not take the run lock {self.path}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: a waiting run then locks a fresh file
        except OSError:
            pass
        os.close(fd)  # closing releases the lock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _link_new(src: str, dst: str) -> bool:
    """Give ``src`` the name ``dst`` too, only if ``dst`` does not exist (False if it does)."""
    try:
        os.link(src, dst)  # atomic, and never replaces an existing file
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK):
            raise
    if os.path.lexists(dst):  # no hard links on this file system: check, then copy
        return False
    import shutil

    shutil.copyfile(src, dst)
    return True


#: POSIX: claims are locked (``fcntl.flock``), so abandoned ones are recognised; elsewhere they are not
_LOCKS = importlib.util.find_spec("fcntl") is not None


def _lock(fd: int) -> bool:
    """Lock a claimed ``.part`` file (``fcntl.flock``) for as long as this process holds it open; True
    where locks are unavailable (Windows: ``msvcrt`` locks would also block this process's writes)."""
    return _try_lock(fd) if _LOCKS else True


def _allow_open_files(n: int) -> None:
    """Raise the soft limit on open files, if needed, so that ``n`` claims (one open file each) fit."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 256  # what the rest of the process (torch, data loading) keeps open
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise OutputError(f"{n} output files cannot be claimed at once: this system allows {hard} open files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return ""
