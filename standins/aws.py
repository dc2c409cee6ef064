"""The embedded AWS of the local and demo stages: moto's server mode, serving S3 and SES over HTTP.

``start_aws_standin`` starts the server on ``standins.aws.host/port`` and bootstraps what the
real account has already: the stage's artifact bucket and a verified SES sender. The pipeline
reaches it through ``aws.endpoint_url`` like it reaches real AWS.

Run it with ``python -m standins.aws`` (settings of the stage named by ``ENV``).

Durability (``standins.aws.state_dir``; unset or empty: everything in memory, as moto has it).
moto keeps S3 and SES in Python objects; with a state directory every request that may change
them (any method but GET/HEAD/OPTIONS: S3 PUT/POST/DELETE including multipart, every SES call)
is followed by a snapshot of moto's S3, SES and SESv2 backends, written before the response goes
back, so what a client saw acknowledged survives a ``kill -9``:

- ``<state_dir>/blobs/<id>``: the bytes of one stored S3 object version or multipart part, written
  (and fsynced) once, when the object first appears in a snapshot; moto sets an object's bytes only
  when it creates the object, so a blob never changes. A blob no snapshot refers to any more is
  deleted after the next snapshot.
- ``<state_dir>/state.pickle``: everything else (buckets, object metadata, multipart uploads, SES
  identities and sent messages), pickled with each object's bytes replaced by its blob's name;
  written to a temporary file, fsynced and renamed over the previous one, so it always holds one
  whole snapshot. Each object version's metadata is pickled once and the bytes are reused by the
  following snapshots (AwsStateStore), so a snapshot does not walk every stored object again.

Cost per write (ext4 on the development VM, medians of a few runs, not guarantees): with 50
objects of 5 MiB stored (250 MiB of state), a 1 KiB PUT spends ~4-5 ms of its ~20 ms in the
snapshot, a 5 MiB PUT ~26-36 ms of its ~85 ms (writing and fsyncing the new blob). The snapshot
grows with the number of stored objects, not their size: ~1.3 KB per object version, ~45 ms per
write with 2000 objects stored. A restart restores 300 MiB in ~1.2 s before it listens. The
demo's three orders are delivered as fast as in memory (the difference is within the sensors'
5 s ticks).

The state file is a pickle: only this stand-in writes it, and it is trusted like the code. It is
tied to the moto version that wrote it; another version (or a damaged file) stops the start with
an error that names the file, instead of starting with an empty S3.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self, cast

import boto3
import moto
from botocore.exceptions import BotoCoreError, ClientError
from moto.core.base_backend import BackendDict, backend_lock
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import FakeKey, S3Backend, s3_backends
from moto.s3.utils import _VersionedKeyStore
from moto.ses.models import ses_backends
from moto.sesv2.models import sesv2_backends
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import get_input_stream

from platform_config.settings import ConfigError, Settings, load_settings

US_EAST_1 = "us-east-1"
STATE_FILE = "state.pickle"
BLOB_DIR = "blobs"
STATE_FORMAT = 1
# The backends the platform uses; nothing else the stand-in serves is kept.
PERSISTED_BACKENDS: dict[str, BackendDict[Any]] = {
    "s3": s3_backends,
    "ses": ses_backends,
    "sesv2": sesv2_backends,
}
# Methods no S3 or SES call changes state with (SES's query API posts even its reads).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Set on a moto FakeKey once its bytes are in a blob; pickled with the key, so a restored key
# keeps its blob and a restart rewrites nothing.
_BLOB_ATTR = "_standin_blob"
# Set on a moto FakeKey: its pickled record and the blobs it names (AwsStateStore.record_for).
_RECORD_ATTR = "_standin_record"

StartResponse = Callable[..., Any]


class AwsStandinError(RuntimeError):
    """The embedded AWS could not be started or bootstrapped."""


class AwsStateError(AwsStandinError):
    """The saved state of the embedded AWS cannot be read or written."""


def _quiet_request_log() -> None:
    # werkzeug logs every request at INFO unless someone configured its logger; keep the stage's output readable.
    logger = logging.getLogger("werkzeug")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _fsync_dir(path: Path) -> None:
    # A rename or a new file is durable only once its directory entry is.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_durably(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` whole or not at all: temporary file, fsync, rename (the caller fsyncs the directory)."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _load_blob(name: str) -> bytes:
    # Stands in the pickle for an object's bytes; _SnapshotUnpickler resolves the name itself.
    raise pickle.UnpicklingError("object bytes are loaded by the stand-in's own unpickler only")


def _load_key(record: bytes) -> FakeKey:
    # Stands in the pickle for one S3 object version; _SnapshotUnpickler resolves the name itself.
    raise pickle.UnpicklingError("S3 objects are loaded by the stand-in's own unpickler only")


class _BlobRef:
    """An object's bytes inside a pickle: only the blob's name is stored."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return _load_blob, (self.name,)


class _StorePickler(pickle.Pickler):
    """A pickler that puts object bytes into the store's blobs and notes which blobs it referenced."""

    def __init__(self, file: IO[bytes], store: AwsStateStore) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._store = store
        self.blobs: set[str] = set()


class _RecordPickler(_StorePickler):
    """Pickles one S3 object version (and the part versions its multipart holds) with blob refs for bytes."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FakeKey):
            # FakeKey.__getstate__ would copy the bytes into the pickle; the blob holds them, and
            # FakeKey.__setstate__ takes them back on load (the blob id is noted on the key first).
            blob = self._store.blob_for(obj)
            self.blobs.add(blob)
            skip = ("_value_buffer", "lock", _RECORD_ATTR)
            state = {k: v for k, v in obj.__dict__.items() if k not in skip}
            state["value"] = _BlobRef(blob)
            # copyreg.__newobj__ is what pickle protocol 2+ names for cls.__new__; typeshed omits it.
            return copyreg.__newobj__, (type(obj),), state  # type: ignore[attr-defined]
        return NotImplemented


class _SnapshotPickler(_StorePickler):
    """Pickles the backends; each S3 object version goes in as its cached record (see AwsStateStore)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FakeKey):
            record, blobs = self._store.record_for(obj)
            self.blobs.update(blobs)
            return _load_key, (record,)
        if isinstance(obj, _VersionedKeyStore):
            # A dict of key name -> versions whose items() and __setitem__ see the newest version
            # only; pickled as is it would come back without its older versions.
            return (
                copyreg.__newobj__,  # type: ignore[attr-defined]
                (type(obj),),
                dict(dict.items(obj)),
                None,
                None,
                dict.update,
            )
        if isinstance(obj, BackendDict):
            # Nothing in a backend should hold a whole service's BackendDict; if it did, a copy of
            # it would come back beside moto's own. Fail the snapshot loudly instead.
            raise pickle.PicklingError(f"a moto backend refers to the BackendDict of {obj.service_name!r}")
        return NotImplemented


class _SnapshotUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], blob_dir: Path) -> None:
        super().__init__(file)
        self._blob_dir = blob_dir
        self.blobs: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        # By name, whichever module wrote them: under `python -m standins.aws` this module is __main__.
        if module in (__name__, "standins.aws", "__main__"):
            if name == "_load_blob":
                return self._load_blob
            if name == "_load_key":
                return self._load_key
        return super().find_class(module, name)

    def _load_blob(self, name: str) -> bytes:
        path = self._blob_dir / name
        try:
            value = path.read_bytes()
        except FileNotFoundError:
            raise pickle.UnpicklingError(f"the object bytes {path} are missing") from None
        self.blobs.add(name)
        return value

    def _load_key(self, record: bytes) -> FakeKey:
        nested = _SnapshotUnpickler(io.BytesIO(record), self._blob_dir)
        key = nested.load()
        if not isinstance(key, FakeKey):
            raise pickle.UnpicklingError(f"an S3 object record holds a {type(key).__name__}")
        self.blobs |= nested.blobs
        # The record on disk is the key as it is now: kept, so the next snapshot reuses it.
        key.__dict__[_RECORD_ATTR] = (record, frozenset(nested.blobs))
        return key


class AwsStateStore:
    """moto's S3/SES backends, snapshot to and restored from ``state_dir`` (see the module docstring).

    Each S3 object version is pickled once into a record (its metadata, with its bytes replaced
    by a blob's name) that is cached on the moto key; a snapshot then costs a pickle of the
    records as bytes plus everything else, not a walk through every key's attributes. moto
    changes a stored key in place only on requests that name it (ACL, retention, legal hold,
    restore: ``/<bucket>/<key>?...``), so ``changed_by`` forgets the records of keys a request's
    path names before the snapshot that follows it.
    """

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_path = self.state_dir / STATE_FILE
        self.blob_dir = self.state_dir / BLOB_DIR
        # Blobs on disk and complete: a key whose blob is missing here is written (again).
        self._blobs: set[str] = set()
        self._new_blobs = False

    def blob_for(self, key: FakeKey) -> str:
        """The blob name of ``key``'s bytes, written now if no blob holds them yet."""
        name = key.__dict__.get(_BLOB_ATTR)
        if isinstance(name, str) and name in self._blobs:
            return name
        try:
            value = key.value
        except ValueError:
            # The buffer of a disposed key is closed (moto's own __getstate__ does the same).
            value = b""
        name = uuid.uuid4().hex
        _write_durably(self.blob_dir / name, lambda file: file.write(value))
        self._blobs.add(name)
        self._new_blobs = True
        key.__dict__[_BLOB_ATTR] = name
        return name

    def record_for(self, key: FakeKey) -> tuple[bytes, frozenset[str]]:
        """The pickled record of ``key`` and the blobs it names, made now unless cached."""
        cached = key.__dict__.get(_RECORD_ATTR)
        if isinstance(cached, tuple) and cached[1] <= self._blobs:
            return cached
        buffer = io.BytesIO()
        pickler = _RecordPickler(buffer, self)
        pickler.dump(key)
        record = (buffer.getvalue(), frozenset(pickler.blobs))
        key.__dict__[_RECORD_ATTR] = record
        return record

    def changed_by(self, path: str) -> None:
        """Forget the cached records of the keys ``path`` (of a changing request) may name."""
        # WSGI's PATH_INFO is the URL-decoded path as latin-1; key names are UTF-8.
        path = path.encode("latin-1", "replace").decode("utf-8", "replace").lstrip("/")
        # Path style (/<bucket>/<key>) or virtual-host style (/<key>): either name, in any bucket.
        names = {path, path.partition("/")[2]} - {""}
        if not names:
            return
        with backend_lock:
            backends = [cast("S3Backend", backend) for _, _, backend in s3_backends.iter_backends()]
        for backend in backends:
            for bucket in backend.buckets.values():
                for name in names:
                    for version in dict.get(bucket.keys, name, ()):
                        version.__dict__.pop(_RECORD_ATTR, None)

    def save(self) -> None:
        """Snapshot the backends. The caller keeps every request that could change them out meanwhile."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        with backend_lock:
            # Plain dicts of the live backends; a reader may create an account's backend at any time.
            backends = {
                service: {account: dict(regions.items()) for account, regions in list(backend_dict.items())}
                for service, backend_dict in PERSISTED_BACKENDS.items()
            }
        # A small header pickle first, so a file of another moto version is refused before any
        # of its moto objects is unpickled (and fails in some less telling way).
        header = {"format": STATE_FORMAT, "moto": moto.__version__}
        snapshot = {"backends": backends, "s3_bucket_accounts": dict(s3_backends.bucket_accounts)}
        self._new_blobs = False
        referenced: set[str] = set()

        def write(file: IO[bytes]) -> None:
            pickle.dump(header, file, protocol=pickle.HIGHEST_PROTOCOL)
            pickler = _SnapshotPickler(file, self)
            pickler.dump(snapshot)
            referenced.update(pickler.blobs)

        try:
            _write_durably(self.state_path, write)
            if self._new_blobs:
                _fsync_dir(self.blob_dir)
            _fsync_dir(self.state_dir)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            raise AwsStateError(f"cannot write the embedded AWS's state to {self.state_path}: {exc}") from exc
        self._collect(referenced)

    def _collect(self, referenced: set[str]) -> None:
        # Only after the new snapshot is in place: until then the previous one may need these.
        for name in self._blobs - referenced:
            with contextlib.suppress(FileNotFoundError):
                (self.blob_dir / name).unlink()
        self._blobs &= referenced

    def restore(self) -> bool:
        """Load the last snapshot into moto's backends; False when there is none yet (a new state_dir)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        if not self.state_path.exists():
            self._blobs = set()
            self._remove_unreferenced_blobs()
            return False
        hint = f"move it away (or delete {self.state_dir}) to start with an empty S3 and SES"
        try:
            with self.state_path.open("rb") as file:
                header = pickle.load(file)
                if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
                    raise AwsStateError(f"{self.state_path} is not a state file of this stand-in; {hint}")
                if header.get("moto") != moto.__version__:
                    raise AwsStateError(
                        f"{self.state_path} was written by moto {header.get('moto')}, this is moto {moto.__version__}; {hint}"
                    )
                unpickler = _SnapshotUnpickler(file, self.blob_dir)
                snapshot = unpickler.load()
                backends, bucket_accounts = snapshot["backends"], snapshot["s3_bucket_accounts"]
        except AwsStateError:
            raise
        except Exception as exc:  # any unpickling failure means the same: unreadable
            raise AwsStateError(
                f"cannot read the embedded AWS's state {self.state_path}: {exc}; {hint}"
            ) from exc
        with backend_lock:
            for service, accounts in backends.items():
                backend_dict = PERSISTED_BACKENDS[service]
                for account, regions in accounts.items():
                    for region, backend in regions.items():
                        # Indexing creates the account's dict (and registers it for moto's reset).
                        backend_dict[account][region] = backend
            s3_backends.bucket_accounts.clear()
            s3_backends.bucket_accounts.update(bucket_accounts)
        self._blobs = set(unpickler.blobs)
        self._remove_unreferenced_blobs()
        return True

    def _remove_unreferenced_blobs(self) -> None:
        # Blobs of a write that was killed before its snapshot, and temporary files of one.
        for path in self.blob_dir.iterdir():
            if path.name not in self._blobs:
                path.unlink()


class _ReadWriteLock:
    """Many readers or one writer: a snapshot must see no request half done, and reads stay parallel."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            # Waiting writers go first, so a stream of downloads cannot hold off an upload.
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


class _WriteThroughApp:
    """WSGI middleware around moto: a changing request is answered only once its snapshot is on disk."""

    def __init__(self, app: Any, store: AwsStateStore) -> None:
        self._app = app
        self._store = store
        self._lock = _ReadWriteLock()

    def _call(self, environ: dict[str, Any]) -> tuple[list[Any], list[bytes]]:
        # The response is collected whole (moto builds it in memory anyway), so nothing reaches
        # the client before the snapshot, and a failed snapshot can still turn it into a 500.
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, headers, exc_info]
            return body.append

        body: list[bytes] = []
        result = self._app(environ, start_response)
        try:
            body.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return started, body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") in READ_METHODS:
            with self._lock.shared():
                started, body = self._call(environ)
        else:
            # The body is read before the lock: a slow upload must not hold off every other request.
            payload = get_input_stream(environ).read()
            environ["wsgi.input"] = io.BytesIO(payload)
            environ["CONTENT_LENGTH"] = str(len(payload))
            with self._lock.exclusive():
                started, body = self._call(environ)
                try:
                    self._store.changed_by(environ.get("PATH_INFO", ""))
                    self._store.save()
                except AwsStateError as exc:
                    # moto has the change in memory; the client sees a failure and retries.
                    print(f"embedded AWS: {exc}", file=sys.stderr, flush=True)
                    message = f"the embedded AWS could not persist this change: {exc}".encode()
                    start_response(
                        "500 Internal Server Error",
                        [("Content-Type", "text/plain"), ("Content-Length", str(len(message)))],
                    )
                    return [message]
        start_response(*started)
        return body

    def drain(self) -> None:
        """Wait for the changes in progress (and their snapshots) to finish."""
        with self._lock.exclusive():
            pass


class EmbeddedAws:
    """moto's WSGI app on a threaded werkzeug server; write-through to ``store`` when it has one."""

    def __init__(self, host: str, port: int, store: AwsStateStore | None = None) -> None:
        self.host = host
        self.port = port
        self.store = store
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._app: _WriteThroughApp | None = None

    def start(self) -> None:
        """Restore the stored state (if any), bind the port and serve in a thread."""
        if self.store is not None:
            self.store.restore()
        # Bound here rather than by werkzeug: on a taken port werkzeug calls sys.exit inside its
        # thread (ThreadedMotoServer then waits forever); this way the start fails at once, clearly.
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise AwsStandinError(
                f"the embedded AWS cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        app: Any = DomainDispatcherApplication(create_backend_app)
        if self.store is not None:
            self._app = app = _WriteThroughApp(app, self.store)
        try:
            # werkzeug duplicates the descriptor; the original is closed below either way.
            self._server = make_server(
                self.host,
                self.port,
                app,
                threaded=True,
                request_handler=MotoRequestHandler,
                fd=listener.fileno(),
            )
        finally:
            listener.close()
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-standin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        if self._app is not None:
            # Requests run in daemon threads; a change being written is let finish, so a clean
            # stop never cuts off a write it was about to acknowledge.
            self._app.drain()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def bootstrap(settings: Settings) -> None:
    """Create the stage's artifact bucket and verify the SES sender; safe to repeat."""
    client_args = {
        "endpoint_url": settings.aws.endpoint_url,
        "region_name": settings.aws.region,
        **settings.aws_credentials(),
    }
    s3 = boto3.client("s3", **client_args)
    create_args: dict[str, object] = {"Bucket": settings.artifacts.bucket}
    if settings.aws.region != US_EAST_1:
        create_args["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws.region}
    try:
        s3.create_bucket(**create_args)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise

    sender = settings.email.sender
    try:
        boto3.client("sesv2", **client_args).create_email_identity(EmailIdentity=sender)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise
    # The classic API is verified too, so code on either SES API can send from the sender.
    boto3.client("ses", **client_args).verify_email_identity(EmailAddress=sender)


def start_aws_standin(settings: Settings, *, state_dir: Path | str | None = None) -> EmbeddedAws:
    """Start the embedded S3/SES on ``standins.aws.host/port`` and bootstrap it; ``stop()`` ends it.

    ``state_dir``: keep S3 and SES there across restarts (``python -m standins.aws`` passes
    ``standins.aws.state_dir``); None keeps them in memory. It is a parameter, not read from the
    settings here, because moto's backends belong to the whole process: a server started inside
    another program (the tests) would restore into, and snapshot, that program's moto state.
    """
    if settings.aws.endpoint_url is None:
        raise AwsStandinError("aws.endpoint_url is unset: this stage talks to real AWS, not the embedded one")
    _quiet_request_log()
    store = AwsStateStore(state_dir) if state_dir else None
    server = EmbeddedAws(settings.standins.aws.host, settings.standins.aws.port, store)
    server.start()
    try:
        bootstrap(settings)
    except Exception:
        server.stop()
        raise
    return server


def main() -> None:
    """Serve the embedded AWS of the current stage (``ENV``) until SIGTERM or SIGINT."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    if not settings.standins.aws.enabled:
        sys.exit(f"the embedded AWS is disabled for stage {settings.stage!r} (standins.aws.enabled)")

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the start: a supervisor may signal as soon as the bucket shows up.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server = start_aws_standin(settings, state_dir=settings.standins.aws.state_dir)
    except (AwsStandinError, BotoCoreError, ClientError) as exc:
        sys.exit(f"embedded AWS: {exc}")
    # A wait without timeout is not interrupted by signals on every platform; a short tick always is.
    while not stop.wait(1.0):
        pass
    server.stop()


if __name__ == "__main__":
    main()
