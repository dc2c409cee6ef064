"""Runs a command with a container's view of the filesystem: ``python -m e2e.mountns [mounts] -- cmd``.

Started through ``ip netns exec``, which gives the process a mount namespace of its own (with the
host's mounts as slaves, so nothing mounted here propagates back). Inside it:

- ``--tmpfs DIR``: an empty tmpfs over DIR (a directory the compose file mounts files into);
- ``--bind SRC:DST[:ro]``: SRC bind-mounted at DST, read-only with ``:ro``; a missing DST is
  created only inside a tmpfs mounted here, never on the host;

then the command is exec'd in place of this process. It refuses to run in the mount namespace
named by ``--host-mnt-ns`` (the caller's, ``readlink /proc/self/ns/mnt``) and in PID 1's, where its
mounts would change the host.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _c_string(value: str | None) -> bytes | None:
    return value.encode() if value is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    arguments = (_c_string(source), _c_string(target), _c_string(fstype))
    if _libc.mount(*arguments, ctypes.c_ulong(flags), _c_string(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source or fstype} on {target}: {os.strerror(errno)}")


def current_mount_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")


def own_mount_namespace(host_namespace: str) -> bool:
    """True only when this process provably runs in a mount namespace other than the host's."""
    own = current_mount_namespace()
    if own == host_namespace:
        return False
    try:
        return own != os.readlink("/proc/1/ns/mnt")
    except OSError:
        return True  # PID 1 is not ours to inspect (a container); the caller's namespace was checked


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print(
            "usage: python -m e2e.mountns --host-mnt-ns NS [--tmpfs DIR] [--bind SRC:DST[:ro]] [--chdir DIR] -- cmd ...",
            file=sys.stderr,
        )
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m e2e.mountns")
    parser.add_argument("--tmpfs", action="append", default=[])
    parser.add_argument("--bind", action="append", default=[])
    parser.add_argument("--chdir")
    parser.add_argument("--host-mnt-ns", required=True, help="the mount namespace that must not be touched")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        print("e2e.mountns: no command", file=sys.stderr)
        return 2
    if not own_mount_namespace(args.host_mnt_ns):
        print(
            "e2e.mountns: refusing to mount in the host's mount namespace (start it with ip netns exec)",
            file=sys.stderr,
        )
        return 2
    # Private from here on: not even the namespace's own later mounts leak anywhere.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    tmpfs_dirs = [Path(directory) for directory in args.tmpfs]
    for directory in tmpfs_dirs:
        _mount("tmpfs", str(directory), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for spec in args.bind:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "ro"):
            print(f"e2e.mountns: bad --bind {spec!r}", file=sys.stderr)
            return 2
        source, target = Path(parts[0]), Path(parts[1])
        if not target.exists():
            if not any(directory in target.parents for directory in tmpfs_dirs):
                print(f"e2e.mountns: {target} does not exist and is not inside a --tmpfs", file=sys.stderr)
                return 2
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                target.mkdir()
            else:
                target.touch()
        _mount(str(source), str(target), None, MS_BIND)
        if len(parts) == 3:
            _mount(None, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    if args.chdir:
        os.chdir(args.chdir)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
