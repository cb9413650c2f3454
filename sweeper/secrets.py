"""Credentials in URLs: masked everywhere the project writes, revealed only where one is opened.

A storage or tracking URL may carry a password (``postgresql+psycopg://user:pw@host/db``,
``...?password=pw``). :func:`mask` replaces it with ``***``. The Hydra callback
:class:`MaskSecrets` (``hydra.callbacks.mask_secrets`` in ``conf/config.yaml``) masks every such
URL in the composed config and in the recorded overrides before Hydra writes anything or builds
the sweeper, so configs, ``.hydra/`` files, trial overrides, MLflow tags and artifacts, logs and
errors only ever hold the masked form. :func:`keep` remembers the real URL of a masked one in the
environment variable ``SWEEPER_SECRET_URLS`` (a JSON object masked -> real) of this process,
which its children inherit (joblib workers, trial processes, the MLflow logging child); the
project never writes it to a file. The code that opens a storage or a tracking store calls
:func:`reveal` to get the real URL back.

Cheap to import (no Hydra, no OmegaConf at module level): the logging child imports it.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any
from urllib.parse import unquote, unquote_plus

from sweeper.messages import one_line

ENV = "SWEEPER_SECRET_URLS"
MASK = "***"
# query (or fragment) parameters whose value is a secret; compared case-insensitively
SECRET_PARAMS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_token"}
)
OVERRIDE_LISTS = (("hydra", "overrides", "task"), ("hydra", "overrides", "hydra"))
# computed by Hydra from the overrides (masked, never turned into overrides of their own)
_COMPUTED = (("hydra", "overrides"), ("hydra", "job"), ("hydra", "runtime"))
MIN_SCRUB = 8  # mask_text: bare secrets shorter than this are left in messages

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_lock = threading.Lock()


def _parts(url: str) -> tuple[str, str, str, str, str] | None:
    """(scheme://, userinfo, host, path, tail) of a URL, or None for anything else.

    ``userinfo`` keeps its trailing ``@`` (empty without credentials); ``tail`` is the query
    and fragment with their ``?``/``#``. Slicing, not urllib: the masked URL must equal the
    original except for the secrets."""
    if not isinstance(url, str):
        return None
    m = _SCHEME.match(url)
    if m is None or any(c.isspace() for c in url):
        return None
    rest = url[m.end() :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, after = rest[:end], rest[end:]
    userinfo, at, host = netloc.rpartition("@")
    q = min((i for i in (after.find(c) for c in "?#") if i >= 0), default=len(after))
    return m.group(0), userinfo + at, host, after[:q], after[q:]


def _mask_params(tail: str, found: list[str]) -> str:
    """``?a=1&password=x#token=y`` with the secret values masked (collected in ``found``)."""
    out = []
    for piece in re.split(r"([?#&;])", tail):
        key, eq, value = piece.partition("=")
        if (
            eq
            and value
            and "${" not in value
            and unquote_plus(key).strip().lower() in SECRET_PARAMS
        ):
            found.append(value)
            piece = f"{key}={MASK}"
        out.append(piece)
    return "".join(out)


def _split_secrets(url: str) -> tuple[str, list[str]]:
    """(the masked URL, the secret values it held); non-URLs come back unchanged."""
    parts = _parts(url)
    if parts is None:
        return url, []
    scheme, userinfo, host, path, tail = parts
    found: list[str] = []
    if userinfo:
        user, colon, password = userinfo[:-1].partition(":")
        # an interpolation (``${oc.env:PGPASS}``) is no secret: it is resolved later, and the
        # resolved value is masked where it is written (``mask_values``)
        if colon and password and "${" not in password:
            found.append(password)
            userinfo = f"{user}:{MASK}@"
    tail = _mask_params(tail, found)
    return scheme + userinfo + host + path + tail, found


def mask(url: Any) -> Any:
    """``url`` with the password of its netloc and secret query parameters as ``***``;
    anything that is not a URL (``journal:/path``, a number, None) comes back unchanged."""
    return _split_secrets(url)[0] if isinstance(url, str) else url


def has_secret(url: Any) -> bool:
    """Whether ``url`` is a URL that holds a real (unmasked) secret."""
    return isinstance(url, str) and any(s != MASK for s in _split_secrets(url)[1])


def is_masked(url: Any) -> bool:
    """Whether ``url`` is a URL with a masked secret (``***``) in it."""
    return isinstance(url, str) and MASK in _split_secrets(url)[1]


def known() -> dict[str, str]:
    """masked -> real URL for the URLs this process (or a parent) kept."""
    try:
        data = json.loads(os.environ.get(ENV) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def keep(url: Any) -> Any:
    """Mask ``url`` and remember the real one for this process and the processes it starts
    (in ``$SWEEPER_SECRET_URLS``); returns the masked URL. Non-secret input is returned as is."""
    masked = mask(url)
    if masked == url:
        return url
    with _lock:
        urls = known()
        if urls.get(masked) != url:
            urls[masked] = url
            os.environ[ENV] = json.dumps(urls, sort_keys=True)
    return masked


def reveal(url: Any) -> Any:
    """The real URL of a masked one (kept by this process or a parent); anything else as is.

    Raises ValueError (one line) for a masked URL whose secret this process does not know."""
    if not is_masked(url):
        return url
    real = known().get(url)
    if real is None:
        raise ValueError(
            f"{url}: the password is not known to this process (this is the masked form that "
            "configs and logs show); pass the URL with its password on the command line"
        )
    return real


def mask_urls(text: Any) -> str:
    """Text with every URL in it masked (``a=1,b=http://u:pw@h`` -> ``...http://u:***@h``)."""
    return _IN_TEXT.sub(lambda m: mask(m.group(0)), str(text))


def mask_text(text: Any) -> str:
    """An error message or log line: :func:`mask_urls`, and every secret of the URLs this
    process kept (``MIN_SCRUB`` characters or more) replaced by ``***`` wherever it appears,
    URL or not. Only for messages: it may mask words that merely equal a password."""
    text = mask_urls(text)
    for real in known().values():
        for secret in _split_secrets(real)[1]:
            for form in {secret, unquote(secret), unquote_plus(secret)}:
                if len(form) >= MIN_SCRUB:
                    text = text.replace(form, MASK)
    return text


def mask_values(value: Any) -> Any:
    """A plain value (an override's, or a resolved config container) with its secret-bearing
    strings masked (and kept): e.g. a password that came through ``${oc.env:...}``, which the
    callback could not see, before a resolved config is written."""
    if isinstance(value, str):
        masked = keep(value)
        return masked if masked != value else mask_urls(value)
    if isinstance(value, list):
        return [mask_values(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_values(v) for k, v in value.items()}
    return value


def _leaves(value: Any) -> list[str]:
    """The strings in a parsed override value (choice sweeps, lists and dicts included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _leaves(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    inner = getattr(value, "list", None)  # ChoiceSweep
    return _leaves(inner) if isinstance(inner, list) else []


def _parse_override(text: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(text)


def _clean(text: str) -> bool:
    """Whether an override parses and holds no unmasked secret."""
    try:
        leaves = _leaves(_parse_override(text).value())
    except Exception:  # noqa: BLE001 - not an override: check the raw text
        return mask_urls(text) == text
    return all(mask(s) == s and mask_urls(s) == s for s in leaves)


def mask_override(text: str) -> str:
    """An override string (``key=value``) with the secrets of the URLs in its value masked
    (and kept); it still parses (as the same key with the masked value)."""
    if "://" not in text:
        return text
    try:
        override = _parse_override(text)
        value = override.value()
    except Exception:  # noqa: BLE001 - Hydra will reject it anyway; never echo a secret
        return mask_urls(text)
    out = text
    for leaf in _leaves(value):
        masked = mask_values(leaf)
        if masked != leaf:
            out = out.replace(leaf, masked)
    if _clean(out):
        return out
    if not override.is_sweep_override():  # e.g. escapes inside a quoted value
        from sweeper.overrides import format_value

        rebuilt = f"{override.get_key_element()}={format_value(mask_values(value))}"
        if _clean(rebuilt):
            return rebuilt
    return mask_urls(text)


# -- configs ------------------------------------------------------------------------------------
def _strings(node: Any, path: tuple = ()):
    """(path, value) of every string in a plain container (``OmegaConf.to_container``)."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, (*path, i))


def _set(cfg, path: tuple, value: Any) -> None:
    from omegaconf import read_write

    parent = cfg
    for key in path[:-1]:
        parent = parent._get_node(key)
    with read_write(parent):
        parent[path[-1]] = value


def mask_config(cfg, as_overrides: bool = False) -> list[str]:
    """Mask, in place, every secret-bearing URL in ``cfg`` (a DictConfig, with or without its
    ``hydra`` node): string values (real URLs are kept for :func:`reveal`, URLs inside longer
    text are masked) and the override strings of ``hydra.overrides.{task,hydra}``.

    ``as_overrides`` (multirun): a value that came from a config file rather than from an
    override is also appended to ``hydra.overrides.hydra`` as ``key=<masked>``, since each
    job's config is composed again from the files plus these overrides. Returns the masked
    keys."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    masked_keys: list[str] = []
    overridden: set[str] = set()
    for lst in OVERRIDE_LISTS:
        node = OmegaConf.select(cfg, ".".join(lst), default=None)
        if node is None:
            continue
        for i, text in enumerate(list(OmegaConf.to_container(node, resolve=False))):
            new = mask_override(text) if isinstance(text, str) else text
            if new != text:
                _set(cfg, (*lst, i), new)
            if isinstance(new, str):
                overridden.add(new.split("=", 1)[0].strip().lstrip("+~").split("@", 1)[0])
    appended: dict[str, Any] = {}
    for path, value in _strings(plain):
        if path[:3] in OVERRIDE_LISTS:
            continue
        new = keep(value)
        if new == value:
            new = mask_urls(value)
        if new == value:
            continue
        _set(cfg, path, new)
        masked_keys.append(".".join(map(str, path)))
        if as_overrides and not any(path[: len(p)] == p for p in _COMPUTED):
            # the override sets the nearest dict key: a list is replaced as a whole
            cut = next((i for i, k in enumerate(path) if not isinstance(k, str)), len(path))
            keys = path[:cut]
            if keys and all("." not in k for k in keys) and ".".join(keys) not in overridden:
                appended[".".join(keys)] = keys
    if appended:
        from sweeper.overrides import format_value

        extra = []
        for dotted, keys in appended.items():
            value = OmegaConf.to_container(cfg, resolve=False)
            for k in keys:
                value = value[k]
            extra.append(f"{dotted}={format_value(value)}")
        node = OmegaConf.select(cfg, "hydra.overrides.hydra")
        _set(cfg, ("hydra", "overrides", "hydra"), [*node, *extra])
    return masked_keys


class MaskSecrets:
    """Hydra callback: masks secrets in the composed config before Hydra saves it, builds the
    sweeper or recomposes a job (``hydra.callbacks.mask_secrets`` in ``conf/config.yaml``).

    Hydra turns an exception from a callback into a warning and goes on, so a failure here
    ends the command instead (fail closed: nothing may be written with a secret in it)."""

    def on_run_start(self, config, **kwargs: Any) -> None:
        self._mask(config, as_overrides=False)

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        self._mask(config, as_overrides=True)

    @staticmethod
    def _mask(config, as_overrides: bool) -> None:
        try:
            mask_config(config, as_overrides=as_overrides)
        except Exception as err:  # noqa: BLE001
            detail = one_line(mask_text(f"{type(err).__name__}: {err}"))
            raise SystemExit(f"sweeper: cannot mask the secrets in the config: {detail}") from None

    def on_run_end(self, config, **kwargs: Any) -> None:
        pass

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        pass

    def on_job_start(self, config, **kwargs: Any) -> None:
        pass

    def on_job_end(self, config, **kwargs: Any) -> None:
        pass
