"""Where an ``ipc://`` layer lives on disk, and who may read it.

One directory per layer holds everything its processes share: one Unix socket and one lock
file per process, and the SQLite database of memberships, named-channel homes and
presences. The directory is the security boundary: it is created with mode 0700 and must
belong to the current user, so another user on the host can neither read nor inject
messages (Unix sockets need write permission on the file and search permission on every
directory above it). Its files are made 0600 as well, for a directory that is shared on
purpose later.

``ipc:///var/run/app`` names the directory; ``ipc://name`` (``ipc://`` is ``default``) is
``kanal-ipc-<uid>/name`` under ``$XDG_RUNTIME_DIR`` (a per-user tmpfs on systemd hosts),
else under the temporary directory: two applications on one host stay apart by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

from kanal.exceptions import ConfigError

__all__ = ["SOCKET_PATH_LIMIT", "layer_directory", "make_private", "private_directory"]

# sockaddr_un.sun_path: 108 bytes on Linux, 104 on macOS and the BSDs (the smaller one,
# with its NUL), so that a directory that works here also works there.
SOCKET_PATH_LIMIT = 103
# A process's files are "<token>.sock" and "<token>.lock": 12 hex digits.
_LONGEST_FILE = len("0123456789ab.sock")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def layer_directory(netloc: str, path: str) -> Path:
    """The directory of the layer ``ipc://<netloc><path>`` (not created yet)."""
    if netloc and path not in ("", "/"):
        raise ConfigError(
            f"ipc://{netloc}{path}: give either a name (ipc://myapp) or an absolute "
            "directory (ipc:///run/myapp), not both"
        )
    if path not in ("", "/"):
        directory = Path(path)
    else:
        name = netloc or "default"
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"ipc://{name}: a layer name is letters, digits, '.', '_' and '-' "
                "(up to 64, starting with a letter or digit); use ipc:///absolute/dir "
                "for a directory"
            )
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        directory = Path(base) / f"kanal-ipc-{os.getuid()}" / name
    if len(os.fsencode(directory)) + 1 + _LONGEST_FILE > SOCKET_PATH_LIMIT:
        raise ConfigError(
            f"the ipc:// layer directory {str(directory)!r} is too long for a Unix socket "
            f"path (at most {SOCKET_PATH_LIMIT - 1 - _LONGEST_FILE} bytes); choose a "
            "shorter one"
        )
    return directory


def private_directory(directory: Path) -> Path:
    """Create ``directory`` (and its parent under the temp dir) as 0700, or check it is.

    An existing directory must be a real directory (not a symlink) of the current user;
    one with wider permissions is narrowed to 0700. Anything else raises ``ConfigError``:
    a directory someone else controls could be read or written by them.
    """
    for each in (directory.parent, directory) if _is_per_user(directory) else (directory,):
        try:
            each.mkdir(mode=0o700, parents=each is directory)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(
                f"cannot create the ipc:// layer directory {str(each)!r}: {exc}"
            ) from exc
        _check_owned(each)
    return directory


def _is_per_user(directory: Path) -> bool:
    return directory.parent.name == f"kanal-ipc-{os.getuid()}"


def _check_owned(directory: Path) -> None:
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"the ipc:// layer directory {str(directory)!r} is not a directory")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"the ipc:// layer directory {str(directory)!r} belongs to uid {info.st_uid}, "
            f"not to this user ({os.getuid()}): refusing to use it"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)


def make_private(path: Path) -> None:
    """Make a file of the layer readable and writable by its owner only (0600)."""
    # Removed meanwhile: a peer cleaned up after a dead process.
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)
