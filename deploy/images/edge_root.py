"""Assemble the root file system of the edge images' runtime (deploy/images/edge-base.Dockerfile).

Run by the Python of PYTHON_BASE_IMAGE inside the build stage, it copies into ROOT only what a
Python service of the edge stack runs on: the interpreter, its standard library without what only
development or a desktop uses, the installed packages of SITE (``pip install --target``), the
shared libraries all of that links against (found with ``ldd``), the ``ems`` user and, for the
SBOM, the dpkg records of the Debian packages those files come from. No shell, no package manager,
no pip: the final stage is ``FROM scratch`` plus this tree, one layer both edge images share.

    python3 edge_root.py SITE ROOT
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

EMS_UID = 10001
# Parts of the standard library a service never imports: tests, IDLE, Tk, the 2to3 converter,
# pip's bootstrap, venv (the image has no environments to create), turtle demos, pydoc's topics.
STDLIB_DROPPED = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "venv",
        "pydoc_data",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "__phello__",
    }
)
STDLIB_DROPPED_FILES = frozenset({"turtle.py", "sitecustomize.py", "README.txt", "LICENSE.txt"})
# Extension modules of the interactive interpreter, the test suite and old Unix databases; they
# would pull ncurses, readline, gdbm and Tk into the image.
DYNLOAD_DROPPED = re.compile(
    r"^(_test|_ctypes_test|_xx|xx|_curses|readline|_dbm|_gdbm|_tkinter|nis|ossaudiodev|audioop|_crypt)"
)
# Inside installed packages: their own test suites and type stubs are no part of running them.
SITE_DROPPED_DIRS = frozenset({"tests", "test", "__pycache__", "bin"})
SITE_DROPPED_SUFFIXES = (".pyi", ".c", ".h", ".pyx", ".pxd")
# glibc loads libgcc_s at run time (thread cancellation unwinds with it); ldd does not list it.
DLOPENED = ("libgcc_s.so.1",)
LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def copy_file(source: Path, root: Path) -> Path:
    """``source`` at the same absolute path under ``root`` (symlinks followed: the file itself)."""
    target = root / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)
    return target


def copy_stdlib(stdlib: Path, root: Path) -> list[Path]:
    copied: list[Path] = []
    for directory, subdirs, files in os.walk(stdlib):
        subdirs[:] = sorted(d for d in subdirs if d not in STDLIB_DROPPED and not d.startswith("config-"))
        here = Path(directory)
        for name in sorted(files):
            source = here / name
            if name in STDLIB_DROPPED_FILES or name.endswith((".pyc", ".exe", ".a")):
                continue
            if here.name == "lib-dynload" and DYNLOAD_DROPPED.match(name):
                continue
            if not source.exists():
                # A dangling symlink (Debian links a few config files into /etc).
                continue
            copied.append(copy_file(source, root))
    return copied


def copy_site(site: Path, purelib: Path, root: Path) -> list[Path]:
    copied: list[Path] = []
    for directory, subdirs, files in os.walk(site):
        subdirs[:] = sorted(d for d in subdirs if d not in SITE_DROPPED_DIRS)
        here = Path(directory)
        for name in sorted(files):
            if name.endswith(SITE_DROPPED_SUFFIXES) or name.endswith(".pyc"):
                continue
            target = root / purelib.relative_to("/") / (here / name).relative_to(site)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(here / name, target)
            copied.append(target)
    return copied


def linked_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the dynamic loader) the binaries need, as ``ldd`` resolves them."""
    needed: set[Path] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        if "not a dynamic executable" in result.stdout + result.stderr:
            continue
        if result.returncode != 0 or "not found" in result.stdout:
            sys.exit(f"ldd {binary}: {result.stdout}{result.stderr}")
        needed.update(Path(match.group(1)) for match in LDD_LINE.finditer(result.stdout))
    return needed


def copy_library(library: Path, root: Path) -> None:
    """The library's file at its real path, and the name it was linked by pointing at it."""
    real = library.resolve()
    copy_file(real, root)
    folder = library.parent.resolve()
    link = root / folder.relative_to("/") / library.name
    if (folder / library.name) != real and not link.is_symlink() and not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(real, folder))


def dpkg_records(paths: list[Path], root: Path) -> None:
    """``/var/lib/dpkg/status`` with the paragraphs of the Debian packages the copied files belong to."""
    status = Path("/var/lib/dpkg/status")
    if not status.exists() or shutil.which("dpkg-query") is None:
        return
    queried = sorted({str(p) for path in paths for p in (path, path.resolve())})
    # dpkg knows a file by the path its package ships (/lib/... on a merged-/usr system): ask both.
    result = subprocess.run(["dpkg-query", "--search", *queried], capture_output=True, text=True, check=False)
    packages = {
        name.strip().split(":", 1)[0]
        for line in result.stdout.splitlines()
        if ": " in line
        for name in line.split(": ", 1)[0].split(",")
    }
    kept = []
    for paragraph in status.read_text().split("\n\n"):
        fields = dict(re.findall(r"^(Package|Status): (.*)$", paragraph, flags=re.MULTILINE))
        if fields.get("Package") in packages and fields.get("Status") == "install ok installed":
            kept.append(paragraph.strip())
    target = root / "var/lib/dpkg/status"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n\n".join(sorted(kept)) + "\n")


def system_files(root: Path, library_dirs: set[Path]) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\nems:x:{EMS_UID}:{EMS_UID}:ems:/var/lib/ems:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nems:x:{EMS_UID}:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    # The loader's cache: the public base keeps libpython in /usr/local/lib, outside its default path.
    (etc / "ld.so.conf").write_text("".join(f"{d}\n" for d in sorted(map(str, library_dirs))))
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    for folder, mode in (("tmp", 0o1777), ("root", 0o700), ("var/lib/ems", 0o755)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder).chmod(mode)
    os.chown(root / "var/lib/ems", EMS_UID, EMS_UID)


def merged_usr_links(root: Path) -> None:
    """/lib, /lib64, /bin, /sbin as the base has them: symlinks into /usr on a merged-/usr Debian."""
    for name in ("bin", "sbin", "lib", "lib64"):
        top = Path("/") / name
        if top.is_symlink():
            (root / name).symlink_to(os.readlink(top))


def main(site: Path, root: Path) -> None:
    root.mkdir(parents=True)
    merged_usr_links(root)
    paths = sysconfig.get_paths()
    stdlib, purelib = Path(paths["stdlib"]), Path(paths["purelib"])
    interpreter = Path(sys.executable).resolve()
    copy_file(interpreter, root)
    # The name the images, the compose files' healthchecks and the fixture commands run.
    (root / interpreter.parent.relative_to("/") / "python3").symlink_to(interpreter.name)
    copied = [interpreter, *copy_stdlib(stdlib, root), *copy_site(site, purelib, root)]
    binaries = [path for path in copied if path.suffix == ".so" or path == interpreter]
    libraries = linked_libraries(binaries)
    for name in DLOPENED:
        found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
        match = re.search(rf"{re.escape(name)} .*=> (\S+)", found)
        if match:
            libraries.add(Path(match.group(1)))
    for library in sorted(libraries):
        copy_library(library, root)
    system_files(root, {library.parent.resolve() for library in libraries})
    dpkg_records([interpreter, stdlib / "os.py", *(stdlib / "lib-dynload").iterdir(), *libraries], root)
    # Bytecode is written once here, never at run time (PYTHONDONTWRITEBYTECODE, and /usr is not
    # the service user's): unchecked hashes stay valid whatever the files' times become in a layer.
    for tree in (root / stdlib.relative_to("/"), root / purelib.relative_to("/")):
        compileall.compile_dir(
            tree,
            # Tracebacks name the files where they lie in the image, not in this stage.
            ddir=Path("/") / tree.relative_to(root),
            quiet=1,
            optimize=0,
            workers=0,
            invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
