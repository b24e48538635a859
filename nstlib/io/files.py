"""File safety, in one place: input files are regular files, outputs are checked before any work and written
atomically (a temporary file `NAME.part-<pid>-<random>` next to the target, then a rename), as downloads are; the
temporary files of killed processes are removed by the next write to the same target.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import BinaryIO

from nstlib.core.errors import ImageLoadError, NstlibError, OutputError

#: Longest file name most file systems allow, in bytes.
NAME_MAX = 255
#: Refuse to start when the output's file system has less free space than this.
MIN_FREE_BYTES = 16 * 2**20
_CAUSES = {
    errno.ENOENT: "file not found",
    errno.ELOOP: "symbolic link loop (too many levels of links); point the link at a real file",
    errno.ENAMETOOLONG: f"a name in the path is too long (over {NAME_MAX} bytes); use a shorter name",
    errno.EACCES: "permission denied (a folder on the way cannot be searched, or the file cannot be read)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def show(path: str | os.PathLike) -> str:
    """A path for a one-line message: as is, or quoted with escapes if it holds a newline or control character."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)


def _cause(e: OSError) -> str:
    return _CAUSES.get(e.errno, e.strerror or str(e))


def check_input_file(path: str | os.PathLike, error: type[NstlibError] = ImageLoadError,
                     what: str = "an image") -> Path:
    """`path` if it is an existing regular file (through links), else `error` with a one-line reason (a FIFO would
    make a read wait forever)."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        raise error(f"{show(p)}: {_cause(e)}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{show(p)}: is a directory, not {what} file")
    if not stat.S_ISREG(mode):
        raise error(f"{show(p)}: is not a regular file (a FIFO, device or socket); give {what} file")
    return p


def open_input(path: Path, error: type[NstlibError] = ImageLoadError) -> BinaryIO:
    """Open a checked input file for reading; a failure (e.g. no read permission) is `error` with its cause."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as e:
        raise error(f"{show(path)}: cannot open it ({_cause(e)})") from None


def same_file(a: Path, b: Path) -> bool:
    """True if `a` and `b` name the same file (also through links or another spelling)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False


def check_output_path(path: str | os.PathLike, inputs: Iterable[object] = (), *, overwrite: bool = True,
                      extensions: Collection[str] | None = None) -> Path:
    """Check an output path before any work, each refusal an `OutputError` with its cause. Writability is probed with
    the write's own temporary file: permission bits say nothing to root."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise OutputError(f"output path {path!r}: give a file name such as 'result.png'")
    if os.path.basename(os.fsdecode(path)) in ("", ".", ".."):
        raise OutputError(f"{show(path)}: names a folder, not a file; give a file name (no trailing {os.sep!r}), "
                          "such as 'result.png'")
    out = Path(path)
    for src in inputs:
        if isinstance(src, (str, os.PathLike)) and same_file(out, Path(src)):
            raise OutputError(f"{show(out)}: refusing to overwrite an input image; choose another output path")
    try:
        is_dir = stat.S_ISDIR(os.stat(out).st_mode)
    except FileNotFoundError:
        if os.path.islink(out):
            raise OutputError(f"{show(out)}: is a broken symbolic link; remove it or choose another output "
                              "path") from None
    except OSError as e:  # a link loop, an over-long name, a folder that cannot be searched, a file on the way
        raise OutputError(f"{show(out)}: {_cause(e)}") from None
    else:
        if is_dir:
            raise OutputError(f"{show(out)}: is a folder; give a file name such as {show(out / 'result.png')}")
        if not overwrite:
            raise OutputError(f"{show(out)}: already exists; pass --force (overwrite=True) to replace it")
    if extensions is not None and out.suffix.lower() not in extensions:
        raise OutputError(f"{show(out)}: unknown image extension {out.suffix!r}; end the name with one of "
                          f"{', '.join(sorted(extensions))}")
    folder = out.parent
    if not folder.is_dir():  # os.stat said "not found" (a file on the way would have been ENOTDIR)
        raise OutputError(f"{show(out)}: the folder {show(folder)} does not exist; create it first")
    try:
        fd, probe = new_part(out)
        try:
            os.close(fd)
        finally:  # also on Ctrl-C: the probe never stays
            probe.unlink()
    except OSError as e:
        raise OutputError(f"{show(out)}: cannot write in {show(folder)} ({_cause(e)}); choose another folder") from None
    check_space(out)
    return out


def check_space(out: Path, size: int = 0, what: str = "") -> None:
    """Refuse to write `out` unless its disk has `MIN_FREE_BYTES` free beyond the `size` bytes of `what`."""
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError as e:
        raise OutputError(f"{show(out)}: cannot write in {show(out.parent)} ({_cause(e)})") from None
    if free < MIN_FREE_BYTES + size:
        state = "is full" if free < MIN_FREE_BYTES else f"has too little space for {what}"
        raise OutputError(f"{show(out)}: the disk holding {show(out.parent)} {state} ({free // 2**20:,} MiB free, "
                          f"{(MIN_FREE_BYTES + size) // 2**20:,} MiB needed); free some space or choose another folder")


def new_part(dest: Path) -> tuple[int, Path]:
    """Create the temporary file `NAME.part-<pid>-<random>` next to `dest`: (open descriptor, path); first delete those
    of `dest` whose process no longer runs."""
    name = dest.name
    while len(os.fsencode(name)) > NAME_MAX - 40:  # room for the pid and the random suffix
        name = name[:-1]
    prefix = f"{name}.part-"
    for part in dest.parent.glob(f"{prefix}*"):
        pid = part.name[len(prefix):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)  # signal 0: only checks that the process exists
            except ProcessLookupError:
                part.unlink(missing_ok=True)
            except (OverflowError, OSError):  # alive under another user (PermissionError), or not a pid
                pass
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", dir=dest.parent)
    return fd, Path(tmp)


def commit(tmp: Path, dest: Path, *, overwrite: bool) -> None:
    """Move `tmp` to `dest` atomically; without `overwrite`, never over a file that appeared there meanwhile."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        try:
            os.link(tmp, dest)  # atomic and exclusive: fails if dest exists
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise
            # no hard links on this file system: claim the name exclusively, then rename over the claim
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            os.replace(tmp, dest)
    except FileExistsError:
        raise OutputError(f"{show(dest)}: a file appeared there while nstlib was running; it was not replaced "
                          "(pass --force / overwrite=True to replace it)") from None
    tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, overwrite: bool = True) -> Path:
    """Call `write(file)` on a temporary file next to `path`, then move it into place: all of it appears, or nothing."""
    out = Path(path)
    try:
        fd, tmp = new_part(out)
    except OSError as e:
        raise OutputError(f"{show(out)}: cannot write in {show(out.parent)} ({_cause(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            mask = os.umask(0o022)  # reading the file-creation mask means setting it: set it straight back
            os.umask(mask)
            os.fchmod(f.fileno(), 0o666 & ~mask)  # mkstemp makes 0600; give the usual permissions
        commit(tmp, out, overwrite=overwrite)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, ValueError)) and not isinstance(e, NstlibError):  # Pillow: ValueError too
            raise OutputError(f"{show(out)}: write failed ({getattr(e, 'strerror', None) or e}); nothing was "
                              "written") from None
        raise
    return out


def usable_cache(folder: Path, what: str, fix: str, error: type[NstlibError]) -> Path:
    """`folder`, created if missing and probed writable; else `error` naming `what`, the cause and the `fix`. A folder
    inside a home that does not exist (HOME=/nonexistent) is refused: creating it would make folders at the root."""
    home = Path(os.path.expanduser("~"))
    if folder.is_relative_to(home) and not home.is_dir():
        raise error(f"{what} {show(folder)} would be inside the home folder {show(home)} (HOME), which does not "
                    f"exist; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):  # named, as a download's file is (not O_TMPFILE)
            pass
    except OSError as e:
        raise error(f"cannot use {what} {show(folder)} ({e.strerror or e}); {fix}") from None
    return folder
