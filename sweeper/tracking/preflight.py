"""Is the tracking URI usable? Checked before the first trial or episode, in seconds.

Without this check a bad URI costs a whole run: MlflowClient retries an unreachable server
for minutes (7 retries, exponential backoff, 120 s timeouts by default), a single run trains
fully and only then fails, and a sweep dies in a long traceback. :func:`check_tracking_uri`
answers within ``timeout`` seconds with one line naming the URI (password masked).

It never imports mlflow (~2.5 s: the training process must not pay it); what it checks, per
scheme, mirrors what MLflow's tracking store registry would do with the URI:

* the scheme must be one MLflow can serve: ``http``/``https`` (a tracking server),
  ``file`` or a plain path (the file store), ``sqlite``/``postgresql``/``mysql``/``mssql``
  with an optional ``+driver`` (SQLAlchemy stores), ``databricks``, ``databricks-uc``,
  ``uc``, or a scheme a plugin registers under the ``mlflow.tracking_store`` entry point
  group. Anything else (``garbage://x``) fails at once: MLflow would only say so when the
  logging process first opens the store, after the run started;
* ``http(s)``: ``GET <uri>/health`` (every ``mlflow server`` answers it, without
  credentials), else the REST API's experiment search with the client's credentials
  (``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, TLS settings from
  ``MLFLOW_TRACKING_INSECURE_TLS``/``MLFLOW_TRACKING_SERVER_CERT_PATH``) for a server behind a
  proxy that only routes the API. Connection refused, no answer within the timeout, or an
  answer other than 200 is an error: the run's logging would stall or fail on each call;
* ``sqlite``: the database's directory can be created and written (SQLite writes a
  journal or WAL file beside the database), and an existing database file is readable and
  writable. MLflow would otherwise fail on its first write, after training started;
* ``file``/path: the file store. MLflow >= 3.13 refuses it unless
  ``MLFLOW_ALLOW_FILE_STORE=true`` (it would say so in each run, after training started), so
  without that setting it is refused here. A plain path must be an existing directory: MLflow
  would make a store of any word (``tracking_uri=garbage`` became ``./garbage``), so a path
  that does not exist is taken for what it most likely is, a mistyped URI; a ``file:`` URI
  says what it is and its directory is created. The directory must be writable;
* other database URLs: a SQLAlchemy connection within the timeout (the driver's connect
  timeout, and a thread bounding the whole attempt): a stopped database server or a missing
  driver fails here rather than in every trial;
* ``databricks``/``uc``/plugin schemes: accepted as they are. Checking them needs their SDKs
  and credentials (what MLflow would import anyway); the logging process reports a failure.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from sweeper.messages import one_line

DATABASE_ENGINES = ("postgresql", "mysql", "sqlite", "mssql")
BUILTIN_SCHEMES = frozenset({"", "file", "http", "https", "databricks", "databricks-uc", "uc"})
ENTRY_POINT_GROUP = "mlflow.tracking_store"


class TrackingUriError(ValueError):
    """The tracking URI cannot be used; the message is one line naming the (masked) URI."""


class _Problem(Exception):
    """What is wrong, without the URI (the caller adds it)."""


def mask(uri: str) -> str:
    """The URI with its password masked (for messages, logs and result files)."""
    try:  # optuna's import comes with it: only paid when there is something to say
        from sweeper.study_storage import redact
    except ImportError:  # pragma: no cover - optuna is a dependency
        return re.sub(r"//([^/:@]*):[^/@]*@", r"//\1:***@", uri)
    return redact(uri)


def check_tracking_uri(
    uri: str, timeout: float = 5.0, *, key: str = "tracking.tracking_uri"
) -> None:
    """Raise :class:`TrackingUriError` unless MLflow can reach ``uri`` (see the module doc).

    ``key`` names where the URI came from in the message (``tracking.tracking_uri``, or
    ``MLFLOW_TRACKING_URI`` when the environment set it).
    """
    try:
        _check(uri, timeout)
    except _Problem as err:
        text = one_line(err, 300).replace(uri, mask(uri)) if uri else one_line(err, 300)
        raise TrackingUriError(f"{key} {mask(uri)}: {text}") from None


def scheme_of(uri: str) -> str:
    """The scheme MLflow's store registry would look up for ``uri`` (``""`` for a path)."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if len(scheme) == 1 and scheme.isalpha():  # a Windows drive letter: a path
        return ""
    if scheme.startswith(DATABASE_ENGINES):
        parts = scheme.split("+")
        if len(parts) > 2 or parts[0] not in DATABASE_ENGINES:
            raise _Problem(
                f"invalid database URI scheme {scheme!r} (expected one of "
                f"{', '.join(DATABASE_ENGINES)}, optionally +driver)"
            )
        return parts[0]
    return scheme


def _plugin_schemes() -> set[str]:
    from importlib.metadata import entry_points

    try:
        return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - broken metadata: no plugins
        return set()


def _check(uri: str, timeout: float) -> None:
    if not uri or not uri.strip():
        raise _Problem("empty URI")
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in DATABASE_ENGINES:
        _check_database(uri, timeout)
    elif scheme in ("", "file"):
        _check_file_store(uri, scheme)
    elif scheme in BUILTIN_SCHEMES or scheme in _plugin_schemes():
        return
    else:
        known = sorted(BUILTIN_SCHEMES - {""} | set(DATABASE_ENGINES) | _plugin_schemes())
        raise _Problem(
            f"MLflow has no tracking store for scheme {scheme!r} (known: {', '.join(known)}, "
            "or an existing directory)"
        )


# -- local stores ---------------------------------------------------------------------------
URI_FORMS = (
    "http://HOST:PORT, sqlite:///PATH, postgresql://..., file:///DIR or an existing directory"
)
FILE_STORE_REFUSED_FROM = (3, 13)  # MLflow's file store needs MLFLOW_ALLOW_FILE_STORE=true


def _check_file_store(uri: str, scheme: str) -> None:
    path = _file_store_path(uri)
    if scheme == "":
        if not path.exists():
            raise _Problem(f"not an MLflow tracking URI ({URI_FORMS})")
        if not path.is_dir():
            raise _Problem(
                f"{path} is a file, not a file store directory (a SQLite database is "
                f"sqlite:///{path.resolve()})"
            )
    refused = _file_store_refused()
    if refused:
        raise _Problem(
            f"MLflow {refused} refuses a file store unless MLFLOW_ALLOW_FILE_STORE=true "
            "(or use a database: sqlite:///PATH/mlflow.db)"
        )
    _check_directory(path)


def _file_store_refused() -> str | None:
    """The installed MLflow's version when it refuses a file store, else None (read from
    the package metadata: importing MLflow costs seconds)."""
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1"):
        return None
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("mlflow", "mlflow-skinny"):
        try:
            text = version(dist)
        except PackageNotFoundError:
            continue
        found = re.match(r"(\d+)\.(\d+)", text)
        if found and (int(found[1]), int(found[2])) >= FILE_STORE_REFUSED_FROM:
            return text
        return None
    return None


def _file_store_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme.lower() != "file":
        return Path(uri).expanduser()
    if parsed.netloc not in ("", "localhost"):
        raise _Problem(f"a file URI on another host ({parsed.netloc!r}) is not supported")
    return Path(urllib.request.url2pathname(parsed.path))


def _check_directory(path: Path) -> None:
    """``path`` is (or can be made) a directory this process can write files in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise _Problem(f"{path} exists and is not a directory") from None
    except OSError as err:
        raise _Problem(f"cannot create directory {path}: {err.strerror or err}") from None
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".sweeper-write-check-"):
            pass
    except OSError as err:
        raise _Problem(f"cannot write in {path}: {err.strerror or err}") from None


def _check_sqlite(uri: str) -> None:
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    path_text = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if path_text in ("", ":memory:"):
        return  # an in-memory database: nothing on disk to check
    path = Path(path_text).expanduser()
    _check_directory(path.parent if str(path.parent) else Path("."))
    if path.exists():
        if not path.is_file():
            raise _Problem(f"{path} is not a file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise _Problem(f"{path} is not readable and writable by this user")
    # The file's content is not read: closing any descriptor of a database file drops every
    # POSIX lock this process holds on it, under the feet of an open SQLite connection (a
    # process that checks a URI may already have the store open).


def _check_database(uri: str, timeout: float) -> None:
    """Connect once with SQLAlchemy, bounded by ``timeout`` (a daemon thread, since not
    every driver has a connect timeout)."""
    result: dict[str, BaseException | None] = {}

    def attempt() -> None:
        try:
            import sqlalchemy

            url = sqlalchemy.engine.make_url(uri)
            args = _connect_timeout_args(url.get_backend_name(), url.get_driver_name(), timeout)
            engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=_null_pool())
            try:
                with engine.connect() as conn:
                    conn.execute(sqlalchemy.text("SELECT 1"))
            finally:
                engine.dispose()
            result["error"] = None
        except BaseException as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=attempt, name="sweeper-tracking-preflight", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if "error" not in result:
        raise _Problem(f"no connection within {timeout:g} s")
    err = result["error"]
    if err is None:
        return
    if isinstance(err, ModuleNotFoundError):
        raise _Problem(f"the database driver is not installed ({err})")
    text = str(getattr(err, "orig", None) or err)
    raise _Problem(f"cannot connect: {type(err).__name__}: {text}")


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def _connect_timeout_args(backend: str, driver: str, timeout: float) -> dict[str, int]:
    seconds = max(1, math.ceil(timeout))
    if backend == "postgresql" and driver in ("psycopg2", "psycopg", "psycopg2cffi"):
        return {"connect_timeout": seconds}
    if backend == "postgresql" and driver == "pg8000":
        return {"timeout": seconds}
    if backend == "mysql" and driver in ("mysqldb", "pymysql", "mysqlconnector"):
        return {"connect_timeout": seconds}
    if backend == "mssql" and driver == "pyodbc":
        return {"timeout": seconds}
    if backend == "mssql" and driver == "pymssql":
        return {"login_timeout": seconds}
    return {}


# -- tracking servers -------------------------------------------------------------------------
def _check_http(uri: str, timeout: float) -> None:
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        raise _Problem("no host in the URL")
    try:
        port = parts.port
    except ValueError:
        raise _Problem("invalid port in the URL") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_tls_context()))
    deadline = time.monotonic() + timeout
    status = _get(opener, f"{base}/health", {}, timeout)
    if status == 200:
        return
    # A proxy in front of a server may route only the API: ask the API itself.
    headers = _auth_headers(parts)
    remaining = max(0.5, deadline - time.monotonic())
    api = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
    status = _get(opener, api, headers, remaining)
    if status == 200:
        return
    if status in (401, 403):
        raise _Problem(
            f"the server refused the credentials (HTTP {status}); set "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
        )
    raise _Problem(f"not an MLflow tracking server? GET /health answered HTTP {status}")


def _get(opener, url: str, headers: dict[str, str], timeout: float) -> int:
    """The HTTP status of GET ``url``; a _Problem when there is no answer at all."""
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with opener.open(request, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError) as err:
        raise _Problem(f"unreachable ({_reason(err, timeout)})") from None


def _reason(err: BaseException, timeout: float) -> str:
    cause = getattr(err, "reason", err)
    if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
        return f"no answer within {timeout:g} s"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return one_line(str(cause), 200)


def _auth_headers(parts: urllib.parse.SplitResult) -> dict[str, str]:
    import base64

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or parts.username
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or parts.password
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def _tls_context():
    import ssl

    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()  # noqa: S323 - the user asked for it
    cafile = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None
    return ssl.create_default_context(cafile=cafile)
