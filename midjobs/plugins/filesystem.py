"""
C{filesystem.*}: files under the configured roots, uploaded and downloaded through job pipes.

Every path is checked by L{Roots} before anything is touched: it must be
absolute, and both the real path of its parent directory and its own real
path (through C{..} and every symlink) must lie inside one of the roots
(C{[filesystem] roots}, default C{<state_dir>/files}).  Anything else is
refused with C{EPERM}.  Directories are then opened from the root down, one
component at a time with C{O_NOFOLLOW}, so a directory swapped for a symlink
after the check is refused too instead of being followed.

Writes are atomic: the upload goes to an unnamed file (C{O_TMPFILE}) beside
the target, which is fsynced and put in the target's place only once the
whole upload has arrived.  A broken upload, an abort or an error drops it and
leaves the target as it was; a crash leaves nothing.  Where unnamed files are
not supported the upload has a temporary name, and the daemon removes such
leftovers from the roots when it starts.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
import secrets
import stat as stat_module
from typing import Any, Callable, Iterator, Sequence

import attrs
from twisted.internet.threads import deferToThreadPool

from ..config import Settings
from ..errors import CallError, ValidationErrors
from ..job import Job, JobAborted
from ..logs import logger
from ..pipe import Pipe
from ..progress import JobProgressBuffer
from ..transfer_progress import transfer_progress
from ..query import filter_list
from ..service import Service, job, read_only, roles

__all__ = ["FilesystemService", "Roots"]

log = logger(__name__)

#: How much of a file C{filesystem.get} sends at once: each write to the
#: pipe is one trip to the reactor thread, and the job runs ahead of the
#: download by the pipe's high water and one of these.
GET_CHUNK = 256 * 1024
#: How much of an upload C{filesystem.put} takes from its pipe at once.
PUT_CHUNK = 1024 * 1024
#: The mode of a new file written without C{options.mode}.
DEFAULT_MODE = 0o644
#: The permission bits a file written here may have: never setuid, setgid or sticky.
PERMISSION_BITS = 0o777
#: The suffix of the temporary names that uploads are written under (without
#: L{UNNAMED_FILES}) or linked to just before they replace a file.
TEMP_SUFFIX = ".midjobs-tmp"
#: Whether uploads can be written to unnamed files (C{O_TMPFILE}), linked by
#: their C{/proc/self/fd} path when complete.  A filesystem that refuses
#: C{O_TMPFILE} gets named temporary files all the same.
UNNAMED_FILES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOT_NAMES = ("", ".", "..")


def _os_error(e: OSError, path: str) -> CallError:
    return CallError(f"{path}: {e.strerror or e}", e.errno or errno.EFAULT)


@contextlib.contextmanager
def _os_errors(path: str) -> Iterator[None]:
    """
    Turn an C{OSError} into a L{CallError} naming C{path}, with its errno.
    """
    try:
        yield
    except OSError as e:
        raise _os_error(e, path) from None


def _file_type(mode: int) -> str:
    if stat_module.S_ISREG(mode):
        return "FILE"
    if stat_module.S_ISDIR(mode):
        return "DIRECTORY"
    if stat_module.S_ISLNK(mode):
        return "SYMLINK"
    return "OTHER"


def _mtime(st: os.stat_result) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)


def _within(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


@attrs.frozen
class Located:
    """
    A path that passed the checks of L{Roots.locate}.

    @ivar path: the path as the caller gave it.
    @ivar real: its real path: C{..} and every symlink resolved.
    @ivar parent: the real path of the directory holding its last component,
        or L{None} when the path is a root itself.
    @ivar name: its last component as given (possibly a symlink), or C{""}
        when the path is a root itself.
    """

    path: str
    real: str
    parent: str | None
    name: str


class Roots:
    """
    The directories the C{filesystem} service may touch, and the checks every
    path goes through.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(os.path.normpath(p) for p in paths)

    def real_roots(self) -> list[str]:
        """
        The real paths of the roots (resolved at each call: a root may be
        created or moved after the daemon started).
        """
        return [os.path.realpath(p) for p in self.paths]

    def root_of(self, real: str) -> str | None:
        """
        The real root that contains the real path C{real}, or L{None}.
        """
        for root in self.real_roots():
            if _within(real, root):
                return root
        return None

    def _refuse(self, path: str, why: str) -> CallError:
        return CallError(
            f"{path!r} {why}: only paths under {', '.join(self.paths)} are allowed", errno.EPERM
        )

    def locate(self, path: str, *, write: bool = False) -> Located:
        """
        Check C{path} and say where it really is.

        @param write: the path is to be written: it must name a file (its
            last component is not C{""}, C{.} or C{..}); the caller must not
            follow a final symlink (see L{open_target}).
        @raise CallError: C{EPERM}, the path is relative or resolves outside
            the roots; C{EINVAL}, it holds a NUL byte or names no file to write.
        """
        if not isinstance(path, str) or not os.path.isabs(path):
            raise self._refuse(str(path), "is not an absolute path")
        if "\0" in path:
            raise CallError(f"{path!r} contains a NUL byte", errno.EINVAL)
        head, name = os.path.split(path)
        real = os.path.realpath(path)
        if write and name in _NOT_NAMES:
            raise CallError(f"{path!r} does not name a file", errno.EINVAL)
        if real in self.real_roots() and os.path.normpath(path) in (*self.paths, real):
            return Located(path, real, None, "")
        if name in _NOT_NAMES:
            # ".." and "." are followed like the kernel does: what counts is where they lead.
            parent, name = os.path.split(real)
        else:
            parent = os.path.realpath(head)
        if self.root_of(parent) is None or self.root_of(real) is None:
            raise self._refuse(path, "resolves outside the filesystem roots")
        return Located(path, real, parent, name)

    def open_dir(self, real_dir: str) -> int:
        """
        Open the directory C{real_dir} (a real path inside a root) from its
        root down, refusing to follow any symlink on the way.

        @return: a file descriptor the caller closes.
        @raise CallError: C{EPERM}, C{real_dir} is outside the roots or a
            component was replaced by a symlink; the errno of the C{OSError}
            (C{ENOENT}, C{ENOTDIR}) otherwise.
        """
        root = self.root_of(real_dir)
        if root is None:
            raise self._refuse(real_dir, "resolves outside the filesystem roots")
        relative = os.path.relpath(real_dir, root)
        with _os_errors(real_dir):
            fd = os.open(root, _DIR_FLAGS)
            if relative == ".":
                return fd
            for part in relative.split(os.sep):
                try:
                    next_fd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    if e.errno == errno.ELOOP:
                        raise self._refuse(real_dir, "changed into a symbolic link while being opened") from None
                    raise
                finally:
                    os.close(fd)
                fd = next_fd
        return fd

    @contextlib.contextmanager
    def parent_dir(self, located: Located) -> Iterator[int]:
        """
        The opened directory holding C{located}'s last component.
        """
        if located.parent is None:
            raise CallError(f"{located.path!r} is a filesystem root", errno.EISDIR)
        fd = self.open_dir(located.parent)
        try:
            yield fd
        finally:
            os.close(fd)


def check_single_link(fd: int, path: str, *, allow_hard_links: bool) -> os.stat_result:
    """
    Check that the opened file C{fd} may be read: a regular file with one
    name, unless C{allow_hard_links}.  A second name may be a hard link made
    inside a root to a file outside it, which the path checks cannot see; so
    the count is read from the opened descriptor, never from the path.

    @return: the file's C{fstat}.
    @raise CallError: C{EISDIR}, a directory; C{EINVAL}, not a regular file;
        C{EPERM}, a regular file with more than one hard link.
    """
    with _os_errors(path):
        st = os.fstat(fd)
    if stat_module.S_ISDIR(st.st_mode):
        raise CallError(f"{path!r} is a directory", errno.EISDIR)
    if not stat_module.S_ISREG(st.st_mode):
        raise CallError(f"{path!r} is not a regular file", errno.EINVAL)
    if st.st_nlink > 1 and not allow_hard_links:
        raise CallError(
            f"{path!r} has {st.st_nlink} hard links: refusing to read it "
            "([filesystem] allow_hard_links is false)",
            errno.EPERM,
        )
    return st


def _stat_dict(st: os.stat_result) -> dict[str, Any]:
    return {
        "type": _file_type(st.st_mode),
        "size": st.st_size,
        "mode": stat_module.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime": _mtime(st),
    }


def _put_options(options: dict[str, Any] | None) -> tuple[bool, int | None]:
    options = options or {}
    errors = ValidationErrors()
    for key in sorted(options.keys() - {"append", "mode"}):
        errors.add(f"options.{key}", "Unknown option")
    append = options.get("append", False)
    if not isinstance(append, bool):
        errors.add("options.append", "Must be a boolean")
    mode = options.get("mode")
    if mode is not None and (
        isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= PERMISSION_BITS
    ):
        errors.add(
            "options.mode",
            "Must be an integer from 0 to 0o777 (511): permission bits only, no setuid, setgid or sticky bit",
        )
    errors.check()
    return append, mode


def upload_name(filename: str | None) -> str:
    """
    The name an uploaded file is written under: the last component of
    C{filename} (after any C{/} or C{\\}).

    @raise CallError: C{EINVAL}, no usable name is left.
    """
    if filename is None:
        raise CallError("An uploaded file has no file name", errno.EINVAL)
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name in _NOT_NAMES or "\0" in name:
        raise CallError(f"{filename!r} is not a valid file name", errno.EINVAL)
    return name


def _copy_fd(source: int, target: int) -> None:
    """
    Copy what C{source} holds from its offset to C{target}.
    """
    try:
        while os.copy_file_range(source, target, PUT_CHUNK):
            pass
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while data := os.read(source, PUT_CHUNK):
        _write_all(target, data)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _temp_name(name: str) -> str:
    """
    A new temporary name for a file being written as C{name}, beside it.
    """
    return f".{name[:32]}.{secrets.token_hex(8)}{TEMP_SUFFIX}"


_TEMP_NAME = re.compile(r"\..{0,32}\.[0-9a-f]{16}" + re.escape(TEMP_SUFFIX), re.DOTALL)


def is_temp_name(name: str) -> bool:
    """
    Whether C{name} has the shape of the names L{_temp_name} makes.
    """
    return _TEMP_NAME.fullmatch(name) is not None


def _open_unnamed(dir_fd: int) -> int | None:
    """
    An unnamed file (C{O_TMPFILE}) in the directory C{dir_fd}, to be linked
    under a name only when complete; L{None} where the kernel or the
    filesystem does not support it.
    """
    if not UNNAMED_FILES:
        return None
    try:
        return os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as e:
        # EISDIR: a kernel that does not know O_TMPFILE; EOPNOTSUPP: a filesystem that does not.
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class AtomicFile:
    """
    A file written beside its target and put in its place only on L{commit}.

    The file is unnamed (C{O_TMPFILE}) while it is written, so a crash leaves
    nothing behind: L{commit} links it under the target's name, or, when a
    target exists, under a temporary name renamed over the target at once.
    Where unnamed files are not supported it is written under a temporary
    name from the start (L{TEMP_SUFFIX}; L{sweep_leftovers} removes those a
    crash left).

    Opening it refuses a target that is a symlink (C{EPERM}), a directory
    (C{EISDIR}) or not a regular file (C{EINVAL}).  With C{append}, the
    target's content is copied to the new file first (refused with C{EPERM}
    if it has more than one hard link, unless C{allow_hard_links}).  The mode
    is C{mode}, else the existing file's permission bits (L{PERMISSION_BITS}:
    a setuid, setgid or sticky bit is never carried over), else
    L{DEFAULT_MODE}.

    @ivar temp_name: the temporary name the file has in the directory, or
        L{None} while it has none.
    """

    def __init__(
        self, dir_fd: int, name: str, path: str, *, mode: int | None, append: bool, allow_hard_links: bool = False
    ) -> None:
        self._dir_fd = dir_fd
        self._allow_hard_links = allow_hard_links
        self.name = name
        self.path = path
        existing = self._existing()
        self._owner = (existing.st_uid, existing.st_gid) if existing is not None else None
        if mode is None:
            mode = existing.st_mode & PERMISSION_BITS if existing is not None else DEFAULT_MODE
        self.mode = mode
        self.temp_name: str | None = None
        with _os_errors(path):
            fd = _open_unnamed(dir_fd)
            if fd is None:
                self.temp_name = _temp_name(name)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(self.temp_name, flags, 0o600, dir_fd=dir_fd)
        self._fd: int | None = fd
        try:
            if append and existing is not None:
                self._copy_existing()
        except BaseException:
            self.discard()
            raise

    def _existing(self) -> os.stat_result | None:
        try:
            st = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _os_error(e, self.path) from None
        if stat_module.S_ISLNK(st.st_mode):
            raise CallError(f"{self.path!r} is a symbolic link: refusing to write through it", errno.EPERM)
        if stat_module.S_ISDIR(st.st_mode):
            raise CallError(f"{self.path!r} is a directory", errno.EISDIR)
        if not stat_module.S_ISREG(st.st_mode):
            raise CallError(f"{self.path!r} is not a regular file", errno.EINVAL)
        return st

    def _copy_existing(self) -> None:
        assert self._fd is not None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        with _os_errors(self.path):
            source = os.open(self.name, flags, dir_fd=self._dir_fd)
            try:
                check_single_link(source, self.path, allow_hard_links=self._allow_hard_links)
                _copy_fd(source, self._fd)
            finally:
                os.close(source)

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        with _os_errors(self.path):
            _write_all(self._fd, data)

    def commit(self) -> None:
        """
        Give the file its mode (and the replaced file's owner, where allowed),
        fsync it, put it in the target's place and fsync the directory.
        """
        fd = self._fd
        assert fd is not None
        try:
            with _os_errors(self.path):
                os.fchmod(fd, self.mode)
                if self._owner is not None:
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, *self._owner)
                os.fsync(fd)
                if self.temp_name is None and not self._link_as_target(fd):
                    self.temp_name = _temp_name(self.name)
                    os.link(_fd_path(fd), self.temp_name, dst_dir_fd=self._dir_fd, follow_symlinks=True)
                self._fd = None
                os.close(fd)
                if self.temp_name is not None:
                    os.rename(self.temp_name, self.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
                    self.temp_name = None
                os.fsync(self._dir_fd)
        except BaseException:
            self.discard()
            raise

    def _link_as_target(self, fd: int) -> bool:
        """
        Link the unnamed file C{fd} under the target's name, if no file has it.

        @return: whether it was linked; C{False} when a file (the one replaced,
            or one created meanwhile) has the name.
        """
        if self._owner is not None:
            return False
        try:
            os.link(_fd_path(fd), self.name, dst_dir_fd=self._dir_fd, follow_symlinks=True)
        except FileExistsError:
            return False
        return True

    def discard(self) -> None:
        """
        Drop the new file (the target stays as it was).
        """
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self.temp_name is not None:
            name, self.temp_name = self.temp_name, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._dir_fd)


def sweep_leftovers(root: str) -> int:
    """
    Remove from the tree under C{root} the regular files whose names have the
    shape of temporary names (L{is_temp_name}): what uploads written under a
    temporary name left when the daemon died.  Symlinks are neither followed
    nor removed; a directory that cannot be read is skipped.

    @return: how many files were removed.
    """
    removed = 0

    def skipped(error: OSError) -> None:
        log.warn("Not looking for leftover uploads in {path}: {error}", path=error.filename, error=error.strerror)

    for _, _, names, dir_fd in os.fwalk(root, onerror=skipped, follow_symlinks=False):
        for name in names:
            if not is_temp_name(name):
                continue
            try:
                if stat_module.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


def _receive(job: Job, pipe: Pipe | None, target: AtomicFile, report: Callable[[int], None]) -> int:
    """
    Copy C{pipe} to C{target} until EOF, reporting with C{report(bytes)}.
    The pipe raises if the upload broke or the job was aborted.
    """
    assert pipe is not None, "@job(pipes=['input']) refuses a call without it"
    buffer = bytearray(PUT_CHUNK)
    view = memoryview(buffer)
    done = 0
    while n := pipe.r.readinto(buffer):
        if job.aborted.is_set():
            raise JobAborted()
        target.write(view[:n])
        done += n
        report(done)
    if job.aborted.is_set():
        raise JobAborted()
    return done


class FilesystemService(Service):
    """
    Files under the configured roots (C{[filesystem] roots}).
    """

    namespace = "filesystem"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        settings = middleware.settings
        self._default_root = settings is None or not settings.filesystem_roots
        if settings is not None:
            paths = settings.filesystem_root_paths
        else:
            paths = (os.path.join(str(middleware.state_dir), "files"),)
        self.roots = Roots(paths)

    @property
    def allow_hard_links(self) -> bool:
        """
        Whether files with more than one hard link may be read
        (C{[filesystem] allow_hard_links}).
        """
        settings = self.middleware.settings
        return settings.allow_hard_links if settings is not None else Settings().allow_hard_links

    async def setup(self) -> None:
        if self._default_root:
            root = self.roots.paths[0]
            if not os.path.isdir(root):
                os.makedirs(root, mode=0o700, exist_ok=True)
                os.chmod(root, 0o700)
        else:
            for root in self.roots.paths:
                if not os.path.isdir(root):
                    log.warn("Filesystem root {root} does not exist", root=root)
        reactor = self.middleware.reactor
        await deferToThreadPool(reactor, reactor.getThreadPool(), self._sweep)

    def _sweep(self) -> None:
        """
        Remove what uploads cut by a crash left in the roots (before any
        upload starts: the daemon listens only once the services are set up).
        """
        for root in self.roots.paths:
            if os.path.isdir(root):
                removed = sweep_leftovers(root)
                if removed:
                    log.info("Removed {count} leftover upload files under {root}", count=removed, root=root)

    @roles("FILESYSTEM_WRITE")
    @job(pipes=["input"], abortable=True, description=lambda path, options=None: f"Uploading {path}")
    def put(self, job: Job, path: str, options: dict[str, Any] | None = None) -> int:
        """
        Write the upload to C{path}, atomically: the file changes only once the
        whole upload has arrived, and not at all if it breaks.

        C{options}: C{append} (add to the end of the file instead of replacing
        it) and C{mode} (the permission bits, at most 0o777: no setuid, setgid
        or sticky bit; default: those of the existing file, else 0o644).  Refuses a C{path} that is a symlink or a directory.
        Returns the number of bytes uploaded.
        """
        append, mode = _put_options(options)
        located = self.roots.locate(path, write=True)
        progress = JobProgressBuffer(job)
        transfer = transfer_progress(job)

        def report(n: int) -> None:
            progress.set_progress(None, f"{n} bytes written")
            transfer.moved(n)

        with self.roots.parent_dir(located) as dir_fd:
            target = AtomicFile(
                dir_fd, located.name, path, mode=mode, append=append, allow_hard_links=self.allow_hard_links
            )
            try:
                done = _receive(job, job.pipes.input, target, report)
                target.commit()
            except BaseException:
                target.discard()
                raise
            finally:
                progress.flush()
                transfer.finish()
        return done

    @roles("FILESYSTEM_WRITE")
    @job(pipes=["input"], abortable=True, description=lambda directory: f"Uploading files to {directory}")
    def put_files(self, job: Job, directory: str) -> list[str]:
        """
        Write every uploaded file into C{directory} (which must exist), under
        the last component of its file name, each atomically as C{put} does.
        A file name that is empty, C{.}, C{..}, holds a NUL byte or comes twice
        fails the job.  Files completed before a failure stay.  Returns the
        paths written.
        """
        located = self.roots.locate(directory)
        dir_fd = self.roots.open_dir(located.real)
        progress = JobProgressBuffer(job)
        transfer = transfer_progress(job)
        written: list[str] = []
        names: set[str] = set()
        total = 0
        try:
            inputs = job.pipes.inputs
            assert inputs is not None, "@job(pipes=['input']) refuses a call without them"
            for pipe in inputs:
                name = upload_name(pipe.filename)
                if name in names:
                    raise CallError(f"{name!r} was uploaded twice", errno.EINVAL)
                names.add(name)
                path = os.path.join(located.real, name)
                target = AtomicFile(dir_fd, name, path, mode=None, append=False)

                def report(n: int, name: str = name) -> None:
                    progress.set_progress(None, f"{name}: {n} bytes written", {"files": len(written)})
                    transfer.moved(total + n)

                try:
                    total += _receive(job, pipe, target, report)
                    target.commit()
                except BaseException:
                    target.discard()
                    raise
                written.append(path)
                progress.set_progress(None, f"{len(written)} files written", {"files": len(written)})
        finally:
            os.close(dir_fd)
            progress.flush()
            transfer.finish()
        return written

    @roles("FILESYSTEM_READ")
    @read_only
    @job(pipes=["output"], abortable=True, description=lambda path: f"Downloading {path}")
    def get(self, job: Job, path: str) -> int:
        """
        Send the file C{path} to the output pipe (a download), reporting the
        percentage sent.  A regular file with more than one hard link is
        refused (C{EPERM}) unless C{[filesystem] allow_hard_links} is true.
        Returns the number of bytes sent.
        """
        located = self.roots.locate(path)
        if located.parent is None or located.real in self.roots.real_roots():
            raise CallError(f"{path!r} is a directory", errno.EISDIR)
        real_parent, real_name = os.path.split(located.real)
        dir_fd = self.roots.open_dir(real_parent)
        try:
            with _os_errors(path):
                fd = os.open(real_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        assert job.pipes.output is not None, "@job(pipes=['output']) refuses a call without it"
        output = job.pipes.output.w
        progress = JobProgressBuffer(job)
        transfer = transfer_progress(job)
        done = 0
        try:
            st = check_single_link(fd, path, allow_hard_links=self.allow_hard_links)
            with _os_errors(path):
                os.set_blocking(fd, True)
                size = st.st_size
                transfer.expect(size)
                while chunk := os.read(fd, GET_CHUNK):
                    if job.aborted.is_set():
                        raise JobAborted()
                    output.write(chunk)
                    done += len(chunk)
                    percent = 100 * done / size if size else None
                    progress.set_progress(percent, f"{done} of {size} bytes sent")
                    transfer.moved(done)
        finally:
            os.close(fd)
            progress.flush()
            transfer.finish()
        output.close()
        return done

    @roles("FILESYSTEM_READ")
    @read_only
    def stat(self, path: str) -> dict[str, Any]:
        """
        What C{path} is: C{type} (C{FILE}, C{DIRECTORY}, C{SYMLINK} or
        C{OTHER}; a symlink is not followed), C{size}, C{mode} (the permission
        bits), C{uid}, C{gid}, C{mtime} and C{realpath} (where it leads).
        """
        located = self.roots.locate(path)
        with _os_errors(path):
            if located.parent is None:
                st = os.stat(located.real)
            else:
                with self.roots.parent_dir(located) as dir_fd:
                    st = os.stat(located.name, dir_fd=dir_fd, follow_symlinks=False)
        return {**_stat_dict(st), "realpath": located.real}

    @roles("FILESYSTEM_READ")
    @read_only
    def listdir(self, path: str, filters: list[Any] | None = None, options: dict[str, Any] | None = None) -> Any:
        """
        The entries of the directory C{path}, each C{{"name", "path", "type",
        "size", "mode", "uid", "gid", "mtime"}} (symlinks are not followed),
        queried with C{filters} and C{options} as C{core.get_jobs} is.
        """
        located = self.roots.locate(path)
        fd = self.roots.open_dir(located.real)
        entries = []
        try:
            with _os_errors(path), os.scandir(fd) as scan:
                for entry in scan:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append(
                        {"name": entry.name, "path": os.path.join(located.real, entry.name), **_stat_dict(st)}
                    )
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e["name"])
        return filter_list(entries, filters, options)
