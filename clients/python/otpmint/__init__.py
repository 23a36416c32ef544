"""A small typed client for otpmint's tenant API (API.md §18.6), standard library only.

    from otpmint import Client, verify_webhook
    otp = Client("https://otp.example.com", "sk_…")
    minted = otp.mint(email="ada@example.com", purpose="login")
    otp.verify(minted["shareable_key"], "042917")   # raises OtpmintError unless verified

The answer types mirror the server's description (docs/openapi.json) field for field: keys
the server always sends are required, keys it may leave out are in a ``total=False`` part,
and ``Optional[…]`` where it may send null (Python 3.9+: no ``NotRequired``).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import http.client
import json
import math
import re
import os
import secrets
import selectors
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, TypedDict, cast

__all__ = [
    "Client",
    "OtpmintError",
    "WebhookVerificationError",
    "pkce_pair",
    "verify_webhook",
    "was_replayed",
    "MintResult",
    "ResendResult",
    "VerifyResult",
    "Claimed",
    "OtpStatus",
    "DeliveryStatus",
    "HostedSession",
    "HostedStatus",
    "TestMessage",
    "Webhook",
    "WebhookEvent",
]

MintDelivery = Literal["sent", "queued", "unknown", "test"]
OtpState = Literal[
    "pending", "verified", "expired", "exhausted", "superseded", "cancelled", "failed"
]
VerifiedVia = Literal["code", "link"]


class _MintResultRequired(TypedDict):
    shareable_key: str
    expires_at: str
    ttl_seconds: int
    code_length: int
    max_attempts: int
    # `sent` (201), `queued` (202), `unknown` (201: the relay took it, never answered) or
    # `test` (201: in the test inbox).
    delivery: MintDelivery
    locale: str


class MintResult(_MintResultRequired, total=False):
    """``POST /v1/otp`` (MintOut)."""

    test: bool


class ResendResult(MintResult):
    """``POST /v1/otp/{key}/resend`` (ResendOut): a mint's answer with the resends."""

    resends: int


class _VerifiedRequired(TypedDict):
    purpose: str
    verified_at: str


class _Verified(_VerifiedRequired, total=False):
    email: Optional[str]
    phone: Optional[str]


class VerifyResult(_Verified):
    """``POST /v1/otp/verify`` (VerifyOut)."""

    verified: bool


class Claimed(_Verified):
    """A claimed outcome of a key or a hosted session (ClaimedOut)."""

    verified_via: VerifiedVia


class _DeliveryRequired(TypedDict):
    mode: Literal["sync", "async"]
    status: Literal["queued", "sending", "sent", "failed", "unknown", "bounced", "test"]
    attempts: int


class DeliveryStatus(_DeliveryRequired, total=False):
    """A code's delivery, as ``status()`` shows it (DeliveryOut)."""

    reason: Optional[str]
    detail: Optional[str]
    detail_code: Optional[str]
    transport: Optional[str]
    provider_message_id: Optional[str]
    sent_at: Optional[str]


class _OtpStatusRequired(TypedDict):
    status: OtpState
    purpose: str
    created_at: str
    expires_at: str
    attempts_used: int
    attempts_remaining: int
    delivery: DeliveryStatus
    resends: int


class OtpStatus(_OtpStatusRequired, total=False):
    """``GET /v1/otp/{key}`` (StatusOut)."""

    verified_at: Optional[str]
    test: bool
    verified_via: Optional[VerifiedVia]
    email: Optional[str]
    phone: Optional[str]
    claimed: bool


class HostedSession(TypedDict):
    """``POST /v1/tenant/hosted-sessions`` (HostedOut): send the person to ``url``."""

    id: str
    url: str
    expires_at: str


class _HostedStatusRequired(TypedDict):
    status: Literal["open", "verified", "failed", "expired"]


class HostedStatus(_HostedStatusRequired, total=False):
    """``GET /v1/tenant/hosted-sessions/{id}`` (HostedStatusOut)."""

    email: Optional[str]
    verified_at: Optional[str]


class _TestMessageRequired(TypedDict):
    to: str
    subject: str
    text: str
    received_at: str


class TestMessage(_TestMessageRequired, total=False):
    """One message of a test inbox (TestMessageOut)."""

    html: Optional[str]


WebhookEvent = Literal[
    "otp.sent",
    "otp.delivery_failed",
    "otp.verified",
    "otp.attempts_exhausted",
    "otp.cancelled",
    "otp.blocked",
    "otp.bounced",
    "otp.complained",
    "test_recipient.disabled",
]


class _WebhookRequired(TypedDict):
    url: str
    events: List[WebhookEvent]
    created_at: str
    updated_at: str


class Webhook(_WebhookRequired, total=False):
    """The tenant's webhook (WebhookOut). `secret` (`whsec_…`, for `verify_webhook`) is
    there only in the answer that created the webhook and in a rotation's; `disabled_at`
    is set when the endpoint answered 410 Gone (no events until `set_webhook` again)."""

    secret: Optional[str]
    disabled_at: Optional[str]
    disabled_reason: Optional[str]


class OtpmintError(Exception):
    """An answer other than the one asked for: its HTTP status, the problem's `code` and
    `detail`, and the whole body (`attempts_remaining`, `limit`, `reason`, …).
    `retry_after` is the `Retry-After` header in seconds from now (never negative; given
    as seconds or as an HTTP date), when there is one.

    For an answer that is not a problem document (a proxy's page, a redirect, a success
    answer without the JSON it should have) `code` is `""`, `body` is the answer's JSON
    object when it has one (else `{}`) and `detail` holds the answer's text (or says what
    was wrong with it). `request_id` is the answer's `X-Request-Id` (what otpmint's logs
    name the request by), when it has one. `replayed` is True when the answer is the one
    stored for a repeated idempotency key (`Idempotent-Replayed: true`, API.md §9): a 502
    is kept 24 hours under its key, so once the relay is mended, mint again under a new
    key. A problem that names fields has them in `body["errors"]`; the message ends with
    the first. The error pickles and copies (a worker process can raise it to its
    caller)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: Dict[str, Any],
        retry_after: Optional[int] = None,
        request_id: Optional[str] = None,
        replayed: bool = False,
    ) -> None:
        super().__init__(f"{status} {code + ': ' if code else ''}{detail}{_first_error(body)}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body
        self.retry_after = retry_after
        self.request_id = request_id
        self.replayed = replayed

    def __reduce__(self) -> Tuple[Any, ...]:
        fields = (
            self.status,
            self.code,
            self.detail,
            self.body,
            self.retry_after,
            self.request_id,
            self.replayed,
        )
        return (type(self), fields, self.__dict__)


def _first_error(body: Mapping[str, Any]) -> str:
    """` (field: message)` for a problem's first field error (`errors`, API.md §1), else ""."""
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return ""
    field, message = errors[0].get("field"), errors[0].get("message")
    if not isinstance(field, str) or not isinstance(message, str):
        return ""
    more = f"; {len(errors) - 1} more in body['errors']" if len(errors) > 1 else ""
    return f" ({field}: {message}{more})"


class WebhookVerificationError(Exception):
    """A webhook whose secret, signature, timestamp, headers or body do not check out."""


class _Deadline:
    """The whole request's time limit: when it passes, the request's socket is shut down,
    which ends a read however slowly the server sends (a socket timeout alone bounds each
    read, so a server sending a byte a second would hold the call for ever)."""

    def __init__(self, seconds: Optional[float]) -> None:
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._over = False
        self.passed = False
        self._timer: Optional[threading.Timer] = None
        self._end = None if seconds is None else time.monotonic() + seconds
        if seconds is not None:  # None: no limit
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def remaining(self) -> Optional[float]:
        """The seconds left (None: no limit), for a connection opened part-way through."""
        return None if self._end is None else max(self._end - time.monotonic(), 0.001)

    def attach(self, sock: Optional[socket.socket]) -> None:
        with self._lock:
            self._sock = sock
            if self.passed:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._over:  # the request ended first: its answer is whole
                return
            self.passed = True
            _shut(self._sock)

    def cancel(self) -> None:
        """The request is over: from here the deadline shuts nothing (its socket's number
        may be another socket's soon)."""
        with self._lock:
            self._over = True
            self._sock = None
        if self._timer is not None:
            self._timer.cancel()

    def handlers(self) -> List[urllib.request.BaseHandler]:
        """urllib handlers whose connections tell this deadline their socket."""
        deadline = self

        class Http(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                deadline.attach(self.sock)

        handlers: List[urllib.request.BaseHandler] = []

        # The connection class swapped, the arguments left as this Python's urllib gives them.
        class HttpHandler(urllib.request.HTTPHandler):
            def do_open(self, http_class: Any, req: Any, **kw: Any) -> Any:
                return super().do_open(Http, req, **kw)

        handlers.append(HttpHandler())
        if hasattr(http.client, "HTTPSConnection"):  # a Python built without ssl has none

            class Https(http.client.HTTPSConnection):
                def connect(self) -> None:
                    super().connect()
                    deadline.attach(self.sock)

            class HttpsHandler(urllib.request.HTTPSHandler):
                def do_open(self, http_class: Any, req: Any, **kw: Any) -> Any:
                    return super().do_open(Https, req, **kw)

            handlers.append(HttpsHandler())
        return handlers


def _shut(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            # The plain socket's shutdown, also under TLS: ssl.SSLSocket.shutdown would
            # unwrap the TLS object under the reading thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def _framed(headers: Mapping[str, str], status: int) -> bool:
    """Whether an answer's end is known from the answer itself (a length, chunks, or no body
    at all), not only from its connection closing — which a deadline's shutdown would fake."""
    chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
    return headers.get("Content-Length") is not None or chunked or status in (204, 304)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other (an `OtpmintError`): never followed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> Optional[urllib.request.Request]:
        return None


class _Minted(dict):  # type: ignore[type-arg]
    """A mint's answer (a plain dict to its users) that knows whether it was replayed."""

    _otpmint_replayed = False


def was_replayed(result: MintResult) -> bool:
    """Whether `result` — the dict `Client.mint` returned — repeats the answer to an earlier
    request with the same `idempotency_key` (the server sent `Idempotent-Replayed: true`,
    API.md §9: nothing was sent or counted this time). False for a first answer. Raises
    `TypeError` for any other object (a copy of the answer included)."""
    if not isinstance(result, _Minted):
        raise TypeError("was_replayed() takes the dict mint() returned (not a copy)")
    return result._otpmint_replayed


_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")

_NOT_FOUND = {
    "otp_not_found": ("Code not found", "No such code."),
    "session_not_found": ("Session not found", "The tenant has no hosted session with this id."),
}


def _secret(secret_key: str) -> str:
    """The secret key as a header carries it: trimmed, visible ASCII only (never echoed)."""
    # A byte order mark, as an editor may save a key file with one, is no part of the key.
    key = secret_key.strip().lstrip("\ufeff").strip() if isinstance(secret_key, str) else ""
    if not key or not all("!" <= c <= "~" for c in key):
        raise ValueError(
            "secret_key must be the tenant's secret key (sk_…): visible ASCII characters, "
            "no line break or space inside"
        )
    return key


# An idle connection is reused for the next request within this many seconds, well inside
# the time servers keep one open (actix, otpmint's server: 5 s); an older one is closed.
_IDLE_SECONDS = 2.0
# Idle connections kept at most (one a thread making requests at the same time).
_IDLE_MAX = 8


class _Http(http.client.HTTPConnection):
    """A connection that tells its request's deadline its socket once connected."""

    deadline: Optional[_Deadline] = None

    def connect(self) -> None:
        super().connect()
        if self.deadline is not None:
            self.deadline.attach(self.sock)


_Https: Any = None
if hasattr(http.client, "HTTPSConnection"):  # a Python built without ssl has none

    class _HttpsConnection(http.client.HTTPSConnection):
        deadline: Optional[_Deadline] = None

        def connect(self) -> None:
            super().connect()
            if self.deadline is not None:
                self.deadline.attach(self.sock)

    _Https = _HttpsConnection


def _dropped(sock: Optional[socket.socket]) -> bool:
    """Whether an idle connection can no longer carry a request: its socket is gone, or has
    something to read (the server closed it, or sent what nobody asked for)."""
    if sock is None:
        return True
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
    try:
        if pending is not None and pending() > 0:
            return True
        # A selector, not select(): a descriptor over 1024 is no error.
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            return bool(sel.select(0))
    except (OSError, ValueError):
        return True


class _Pool:
    """Keep-alive connections to one origin (HTTP/1.1), each carrying one request at a time;
    safe to share between threads."""

    def __init__(self, https: bool, host: str, port: Optional[int]) -> None:
        # The port always given: a bare IPv6 address would be read as host and port.
        self._https, self._host = https, host
        self._port = port if port is not None else (443 if https else 80)
        self._lock = threading.Lock()
        self._idle: List[Tuple[http.client.HTTPConnection, float]] = []
        self._pid = os.getpid()

    def _forked(self) -> bool:
        """Whether this process is a fork of the one that opened the idle connections: they
        are the parent's too (one answer could reach the other process), so they are let go
        here without a word on them (no close_notify, no FIN of this process's own)."""
        if self._pid == os.getpid():
            return False
        with self._lock:
            self._idle = []
            self._pid = os.getpid()
        return True

    def take(self) -> Optional[http.client.HTTPConnection]:
        """An idle connection still open and fresh enough to reuse, if there is one; the
        ones too old or closed by the server meanwhile are closed."""
        self._forked()
        now = time.monotonic()
        with self._lock:
            fresh = [(c, t) for c, t in self._idle if now - t <= _IDLE_SECONDS]
            stale = [c for c, t in self._idle if now - t > _IDLE_SECONDS]
            self._idle = fresh
        for conn in stale:
            conn.close()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn, _ = self._idle.pop()  # the newest first
            if not _dropped(conn.sock):
                return conn
            conn.close()

    def new(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        cls = _Https if self._https else _Http
        return cast(http.client.HTTPConnection, cls(self._host, self._port, timeout=timeout))

    def give(self, conn: http.client.HTTPConnection) -> None:
        """A connection whose answer was read whole, to carry another request."""
        if self._forked():
            conn.close()
            return
        with self._lock:
            if len(self._idle) < _IDLE_MAX:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


# Requests sent once more, on a new connection, when a kept-alive one turns out closed before
# any answer came — the server may have acted on it all the same: only those whose repeat
# answers as the first did (reads, and a mint with an Idempotency-Key). A cancel repeated
# answers 410, a webhook stored again answers without its secret: not these.
_RETRY_SAFE = ("GET", "HEAD")

_USER_AGENT = "otpmint-python/0.1.0 (Python %d.%d)" % sys.version_info[:2]


class Client:
    """The tenant API with one secret key. Every method raises `OtpmintError` on any answer
    but its route's documented success (status and JSON body) — a redirect included:
    redirects are never followed, so the secret key goes to `base_url` only. Without a whole
    answer it raises `TimeoutError` when `timeout` seconds pass (the whole request:
    connecting, sending, and the answer however slowly it comes), and
    `urllib.error.URLError` for anything else (the server cannot be reached, the
    connection breaks). `timeout` is a positive number of seconds; `None` (or `math.inf`)
    sets no limit; anything else is a `ValueError` here. The secret key is taken without
    the white space around it (a key read from a file ends with a line break); one that
    holds another character a header cannot carry is a `ValueError` here, which never
    repeats it."""

    def __init__(
        self, base_url: str, secret_key: str, timeout: Optional[float] = 15.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret_key = _secret(secret_key)
        self.timeout = _timeout(timeout)
        url = urllib.parse.urlsplit(self.base_url)
        try:
            port = url.port
        except ValueError:  # not a port: urllib says so at the first request
            port, url = None, url._replace(scheme="")
        self._scheme, self._host = url.scheme.lower(), url.hostname or ""
        # What urllib asks the proxy rules of: host and port as written, without userinfo.
        self._netloc = url.netloc.rpartition("@")[2]
        https = self._scheme == "https" and _Https is not None
        self._pool: Optional[_Pool] = None
        if self._host and not url.username and (https or self._scheme == "http"):
            self._pool = _Pool(https, self._host, port)

    def __repr__(self) -> str:  # never the secret key
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        """Close the connections kept open for the next requests (the client stays usable:
        a later request opens a new one)."""
        if self._pool is not None:
            self._pool.close()

    def __del__(self) -> None:  # a client let go closes what it kept open
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _pooled(self) -> Optional[_Pool]:
        """The kept-alive connections to use, or None where urllib goes (through a proxy the
        environment names for this host, as urllib would; an address urllib must judge)."""
        if self._pool is None:
            return None
        if urllib.request.getproxies().get(self._scheme) and not urllib.request.proxy_bypass(
            self._netloc
        ):
            return None
        return self._pool

    def _request(
        self,
        method: str,
        path: str,
        ok: Tuple[int, ...],
        body: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Tuple[Any, Mapping[str, str]]:
        """One request: the JSON object answered with a status in `ok` (None for a 204) and
        the answer's headers; `OtpmintError` for any other answer."""
        data = None if body is None else json.dumps(body).encode()
        pool = self._pooled()
        if pool is not None:
            status, answer_headers, raw = self._send(pool, method, path, data, headers or {})
        else:
            status, answer_headers, raw = self._open(method, path, data, headers or {})
        if status not in ok:
            raise _failure(status, answer_headers, raw)
        if status == 204:
            return None, answer_headers
        value = _json_object(answer_headers, raw)
        if value is None:
            raise _failure(status, answer_headers, raw)
        return value, answer_headers

    def _headers(self, data: Optional[bytes], extra: Mapping[str, str]) -> Dict[str, str]:
        h = {
            "Authorization": f"Bearer {self._secret_key}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(extra)
        return h

    def _send(
        self,
        pool: _Pool,
        method: str,
        path: str,
        data: Optional[bytes],
        headers: Mapping[str, str],
    ) -> Tuple[int, Mapping[str, str], bytes]:
        """One request over a kept-alive connection (a new one when none is idle): status,
        headers and body, read whole within the deadline."""
        target = urllib.parse.urlsplit(self.base_url + path)
        url = (target.path or "/") + ("?" + target.query if target.query else "")
        all_headers = self._headers(data, headers)
        safe = method in _RETRY_SAFE or "Idempotency-Key" in headers
        deadline = _Deadline(self.timeout)
        conn: Optional[http.client.HTTPConnection] = None
        keep = False
        try:
            try:
                conn = pool.take()
                reused = conn is not None
                while True:
                    if conn is None:
                        # Connecting gets what is left of the deadline, not all of it again.
                        conn = pool.new(deadline.remaining())
                    cast(Any, conn).deadline = deadline
                    if reused:
                        deadline.attach(conn.sock)
                        conn.sock.settimeout(deadline.remaining())
                    try:
                        conn.request(method, url, body=data, headers=all_headers)
                        r = conn.getresponse()
                    except (
                        http.client.RemoteDisconnected,
                        ConnectionResetError,
                        ConnectionAbortedError,
                        BrokenPipeError,
                    ):
                        # Closed by the server as it went idle, before any answer: once
                        # more, on a new connection, where sending again is safe.
                        conn.close()
                        conn = None
                        if reused and safe and not deadline.passed:
                            reused = False
                            continue
                        raise
                    break
                status, answer_headers, raw = r.status, r.headers, r.read()
                # An informational answer (103 Early Hints) is not the answer: what follows
                # it on the connection must not reach the next request.
                keep = status >= 200 and not r.will_close
            except socket.timeout as e:  # TimeoutError from Python 3.10
                raise TimeoutError(f"no answer within {self.timeout} s") from e
            except (OSError, http.client.HTTPException) as e:
                if deadline.passed:  # the deadline shut the socket under the read
                    raise TimeoutError(f"no whole answer within {self.timeout} s") from e
                raise urllib.error.URLError(e) from e
        finally:
            deadline.cancel()
            if conn is not None:
                cast(Any, conn).deadline = None
                if keep and not deadline.passed:
                    pool.give(conn)
                else:
                    conn.close()
        if deadline.passed and not _framed(answer_headers, status):
            raise TimeoutError(f"no whole answer within {self.timeout} s")
        return status, answer_headers, raw

    def _open(
        self, method: str, path: str, data: Optional[bytes], headers: Mapping[str, str]
    ) -> Tuple[int, Mapping[str, str], bytes]:
        """One request through urllib (a new connection, through a proxy where the
        environment names one): status, headers and body, read whole within the deadline."""
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        # Unredirected: never copied to another request, should one ever be made.
        req.add_unredirected_header("Authorization", f"Bearer {self._secret_key}")
        req.add_header("Accept", "application/json")
        req.add_header("User-Agent", _USER_AGENT)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in headers.items():
            req.add_header(k, v)
        deadline = _Deadline(self.timeout)
        opener = urllib.request.build_opener(_NoRedirects, *deadline.handlers())
        try:
            try:
                # None: no limit (a blocking socket).
                with opener.open(req, timeout=self.timeout) as r:
                    status, answer_headers, raw = r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:  # 3xx, 4xx, 5xx: an answer
                try:
                    status, answer_headers, raw = e.code, e.headers, e.read()
                finally:
                    e.close()
        except urllib.error.URLError as e:
            if deadline.passed or isinstance(e.reason, socket.timeout):
                raise TimeoutError(f"no answer within {self.timeout} s") from e
            raise
        except socket.timeout as e:  # TimeoutError from Python 3.10
            raise TimeoutError(f"no answer within {self.timeout} s") from e
        except (OSError, http.client.HTTPException) as e:
            if deadline.passed:  # the deadline shut the socket under the read
                raise TimeoutError(f"no whole answer within {self.timeout} s") from e
            raise urllib.error.URLError(e) from e
        finally:
            deadline.cancel()
        # A length or chunks would have told a cut answer (IncompleteRead, above); an answer
        # ended by its connection's close is whole only if the deadline did not close it.
        if deadline.passed and not _framed(answer_headers, status):
            raise TimeoutError(f"no whole answer within {self.timeout} s")
        return status, answer_headers, raw

    def mint(
        self,
        *,
        email: Optional[str] = None,
        phone: Optional[str] = None,
        purpose: Optional[str] = None,
        locale: Optional[str] = None,
        delivery: Optional[Literal["sync", "async"]] = None,
        link_return_url: Optional[str] = None,
        code_challenge: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> MintResult:
        """Mint a code and send it (`POST /v1/otp`): 201 sent, 202 queued (async).

        With `idempotency_key` (1–255 visible ASCII characters, else `ValueError`), a repeat
        answers as the first request did (24 h); `was_replayed(result)` tells which."""
        body: Dict[str, Any] = {}
        for name, value in (
            ("email", email),
            ("phone", phone),
            ("purpose", purpose),
            ("locale", locale),
            ("delivery", delivery),
        ):
            if value is not None:
                body[name] = value
        if code_challenge is not None and link_return_url is None:
            raise ValueError("code_challenge binds a magic link: give link_return_url too")
        if link_return_url is not None:
            link: Dict[str, Any] = {"return_url": link_return_url}
            if code_challenge is not None:
                link["code_challenge"] = code_challenge
            body["link"] = link
        headers: Dict[str, str] = {}
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not _IDEMPOTENCY_KEY.fullmatch(
                idempotency_key
            ):
                raise ValueError(
                    "idempotency_key must be 1–255 visible ASCII characters (! to ~, no spaces)"
                )
            headers["Idempotency-Key"] = idempotency_key
        v, answer_headers = self._request("POST", "/v1/otp", (201, 202), body, headers)
        result = _Minted(v)
        replayed = answer_headers.get("Idempotent-Replayed") or ""
        result._otpmint_replayed = replayed.strip().lower() == "true"
        return cast(MintResult, result)

    def verify(self, shareable_key: str, otp: str) -> VerifyResult:
        """Check a code (`POST /v1/otp/verify`). A wrong code raises `OtpmintError` 422
        `otp_mismatch` with `body["attempts_remaining"]`; a key that can never verify, 410."""
        body = {"shareable_key": shareable_key, "otp": otp}
        v, _ = self._request("POST", "/v1/otp/verify", (200,), body)
        return cast(VerifyResult, v)

    def status(self, shareable_key: str) -> OtpStatus:
        """The key's status (`GET /v1/otp/{key}`)."""
        v, _ = self._request("GET", _otp_path(shareable_key), (200,))
        return cast(OtpStatus, v)

    def cancel(self, shareable_key: str) -> None:
        """Cancel a pending code (`DELETE /v1/otp/{key}`, 204)."""
        self._request("DELETE", _otp_path(shareable_key), (204,))

    def resend(self, shareable_key: str) -> ResendResult:
        """Send a new code under the same key (`POST /v1/otp/{key}/resend`): 201, 202
        queued. While the key's last message is still queued or being sent the answer is
        409 `conflict` (try again once it was delivered or failed); over `otp.max_resends`,
        429 `resend_limit_reached`; a key no longer pending, 410 with its state's code."""
        v, _ = self._request("POST", _otp_path(shareable_key) + "/resend", (201, 202), {})
        return cast(ResendResult, v)

    def claim(self, shareable_key: str, code_verifier: Optional[str] = None) -> Claimed:
        """Redeem a verified key's outcome once (`POST /v1/otp/{key}/claim`)."""
        body = {} if code_verifier is None else {"code_verifier": code_verifier}
        v, _ = self._request("POST", _otp_path(shareable_key) + "/claim", (200,), body)
        return cast(Claimed, v)

    def create_hosted_session(
        self,
        *,
        return_url: str,
        purpose: Optional[str] = None,
        email: Optional[str] = None,
        locale: Optional[str] = None,
        code_challenge: Optional[str] = None,
    ) -> HostedSession:
        """Start a hosted verification (`POST /v1/tenant/hosted-sessions`); send the person
        to the answer's `url`."""
        body: Dict[str, Any] = {"return_url": return_url}
        for name, value in (
            ("purpose", purpose),
            ("email", email),
            ("locale", locale),
            ("code_challenge", code_challenge),
        ):
            if value is not None:
                body[name] = value
        v, _ = self._request("POST", "/v1/tenant/hosted-sessions", (201,), body)
        return cast(HostedSession, v)

    def hosted_session(self, session_id: str) -> HostedStatus:
        """A hosted session's status (`GET /v1/tenant/hosted-sessions/{id}`)."""
        v, _ = self._request("GET", _session_path(session_id), (200,))
        return cast(HostedStatus, v)

    def claim_hosted_session(
        self, session_id: str, code_verifier: Optional[str] = None
    ) -> Claimed:
        """Redeem a verified hosted session once (`POST …/hosted-sessions/{id}/claim`)."""
        body = {} if code_verifier is None else {"code_verifier": code_verifier}
        v, _ = self._request("POST", _session_path(session_id) + "/claim", (200,), body)
        return cast(Claimed, v)

    def test_inbox(self, to: Optional[str] = None) -> List[TestMessage]:
        """Messages a test tenant or test recipient received (`GET /v1/tenant/test-inbox`),
        newest first: those to `to`, or all of them."""
        q = "" if to is None else "?" + urllib.parse.urlencode({"to": to})
        v, _ = self._request("GET", f"/v1/tenant/test-inbox{q}", (200,))
        return cast(List[TestMessage], v["messages"])

    def set_webhook(self, url: str, events: List[WebhookEvent]) -> Webhook:
        """Register the tenant's webhook endpoint, or replace it (`PUT /v1/tenant/webhook`).
        The answer carries `secret` when this made the webhook (keep it: it is not shown
        again); a replaced one keeps its secret."""
        body = {"url": url, "events": list(events)}
        v, _ = self._request("PUT", "/v1/tenant/webhook", (200,), body)
        return cast(Webhook, v)

    def rotate_webhook_secret(self) -> Webhook:
        """A new signing secret for the webhook (`POST /v1/tenant/webhook/rotate-secret`),
        in the answer's `secret`; 404 `webhook_not_found` without a webhook."""
        v, _ = self._request("POST", "/v1/tenant/webhook/rotate-secret", (200,))
        return cast(Webhook, v)

    def delete_webhook(self) -> None:
        """Remove the webhook (`DELETE /v1/tenant/webhook`); 404 `webhook_not_found`
        without one."""
        self._request("DELETE", "/v1/tenant/webhook", (204,))


def _timeout(value: Optional[float]) -> Optional[float]:
    """A client's time limit: a positive number of seconds, or None for none."""
    refused = "timeout is a positive number of seconds, or None for no limit"
    if value is None:
        return None
    # Any number (an int, a float, a Decimal, a NumPy scalar), never a bool or a string.
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(refused)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(refused) from None
    if seconds == math.inf:
        return None
    if not 0 < seconds < math.inf:
        raise ValueError(refused)
    return seconds


def _segment(value: str, not_found: str) -> str:
    """A key or id as a path segment, percent-encoded. Some strings cannot be one: `.` and
    `..` (URL normalisation, a proxy's or any `fetch`, removes them, `%2E` included), `""`
    (the path would end in `/`) and, for a code's key, `verify` (`/v1/otp/verify` is the
    verify route): the request would go to another route. No key or id is any of them, and
    the server answers a malformed one with 404 (API.md §6.4): that answer, at once (as the
    TypeScript client does)."""
    if value in ("", ".", "..") or (not_found == "otp_not_found" and value == "verify"):
        title, detail = _NOT_FOUND[not_found]
        body = {
            "type": f"/problems/{not_found}",
            "title": title,
            "status": 404,
            "code": not_found,
            "detail": detail,
        }
        raise OtpmintError(404, not_found, detail, body)
    return urllib.parse.quote(value, safe="")


def _otp_path(key: str) -> str:
    return "/v1/otp/" + _segment(key, "otp_not_found")


def _session_path(session_id: str) -> str:
    return "/v1/tenant/hosted-sessions/" + _segment(session_id, "session_not_found")


def _is_json(headers: Mapping[str, str]) -> bool:
    media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return media == "application/json" or bool(re.fullmatch(r"application/[^/]+\+json", media))


def _json_object(headers: Mapping[str, str], raw: bytes) -> Optional[Dict[str, Any]]:
    """The answer's body when it is a JSON object (by media type and content), else None."""
    if not _is_json(headers):
        return None
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def _failure(status: int, headers: Mapping[str, str], raw: bytes) -> OtpmintError:
    """The `OtpmintError` for an answer that is not the one asked for."""
    text = raw.decode("utf-8", errors="replace")
    problem = _json_object(headers, raw)
    code = problem.get("code") if problem is not None else None
    detail = problem.get("detail") if problem is not None else None
    if not isinstance(detail, str):
        detail = text
    if 300 <= status < 400:
        to = headers.get("Location")
        detail = f"a redirect{' to ' + to if to else ''}, not followed"
    elif 200 <= status < 300:
        kind = headers.get("Content-Type") or "no content type"
        detail = f"not the answer expected ({status}, {kind})" + (f": {text}" if text else "")
    elif not detail:
        detail = "no detail"
    return OtpmintError(
        status,
        code if isinstance(code, str) else "",
        detail,
        problem if problem is not None else {},
        _retry_after(headers.get("Retry-After")),
        headers.get("X-Request-Id"),
        (headers.get("Idempotent-Replayed") or "").strip().lower() == "true",
    )


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_IMF = re.compile(r"[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT")
_RFC850 = re.compile(r"[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT")
_ASCTIME = re.compile(r"[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})")


def _retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[int]:
    """`Retry-After` as seconds from now (never negative): delay-seconds, or an HTTP-date in
    any of the three forms of RFC 9110 §5.6.7. None for anything else."""
    if not value:
        return None
    v = value.strip()
    if v.isascii() and v.isdigit():
        return int(v)
    current = time.time() if now is None else now
    if (m := _IMF.fullmatch(v)) is not None:
        day, month, year, hh, mm, ss = m[1], m[2], int(m[3]), m[4], m[5], m[6]
    elif (m := _RFC850.fullmatch(v)) is not None:
        # A two-digit year more than 50 years ahead is in the past century.
        this_year = time.gmtime(current).tm_year
        year = this_year // 100 * 100 + int(m[3])
        if year > this_year + 50:
            year -= 100
        day, month, hh, mm, ss = m[1], m[2], m[4], m[5], m[6]
    elif (m := _ASCTIME.fullmatch(v)) is not None:
        month, day, hh, mm, ss, year = m[1], m[2], m[3], m[4], m[5], int(m[6])
    else:
        return None
    month = month.capitalize()
    if month not in _MONTHS or int(hh) > 23 or int(mm) > 59 or int(ss) > 60:
        return None
    try:
        at = calendar.timegm(
            (year, _MONTHS.index(month) + 1, int(day.strip()), int(hh), int(mm), int(ss))
        )
    except (ValueError, OverflowError):
        return None
    return max(0, math.ceil(at - current))


def pkce_pair() -> Tuple[str, str]:
    """A PKCE verifier (keep it in the browser's session) and its S256 challenge (give it
    to `mint(code_challenge=…)` or `create_hosted_session(code_challenge=…)`). Make one pair
    per flow."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_seconds: int = 300,
    now: Optional[float] = None,
) -> Dict[str, Any]:
    """Check a webhook's Standard Webhooks signature and return its event. `secret` is the
    endpoint's `whsec_…`; `headers` the request's (any case); `body` its raw bytes, before
    any JSON parsing. Raises `WebhookVerificationError` — for a bad secret, missing or
    malformed headers, a stale timestamp, no matching signature or a body that is not
    JSON."""
    # Every line of a header (http.server's headers repeat a name for each line it came in).
    lines: Dict[str, List[Any]] = {}
    try:
        for k, v in headers.items():
            lines.setdefault(str(k).lower(), []).append(v)
    except (AttributeError, TypeError):
        raise WebhookVerificationError("no headers") from None
    if not isinstance(body, (bytes, bytearray)):
        raise WebhookVerificationError("the body is not bytes")

    def one(name: str) -> Any:
        values = lines.get(name, [])
        if len(set(map(str, values))) > 1:
            raise WebhookVerificationError(f"{name} is given twice, differently")
        return values[0] if values else None

    msg_id = one("webhook-id")
    stamp = one("webhook-timestamp")
    sig_lines = lines.get("webhook-signature", [])
    signatures = (
        " ".join(sig_lines) if sig_lines and all(isinstance(v, str) for v in sig_lines) else None
    )
    if not all(isinstance(h, str) and h for h in (msg_id, stamp, signatures)):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    assert isinstance(msg_id, str) and isinstance(stamp, str) and isinstance(signatures, str)
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not a number")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old or too new")
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise WebhookVerificationError("the secret is not a whsec_ secret")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not base64 after whsec_") from None
    if not key:
        raise WebhookVerificationError("the secret is empty after whsec_")
    try:
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + bytes(body)
    except UnicodeEncodeError:
        raise WebhookVerificationError("webhook-id is not text") from None
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # Space-separated; a framework may join repeated header lines with ", ".
    for candidate in signatures.split():
        version, _, value = candidate.rstrip(",").partition(",")
        # Bytes: a header with other than ASCII in it is a mismatch, not an exception.
        if version == "v1" and hmac.compare_digest(
            value.encode("utf-8", errors="replace"), expected
        ):
            try:
                event: Dict[str, Any] = json.loads(body)
                return event
            except ValueError:
                raise WebhookVerificationError("the signed body is not JSON") from None
    raise WebhookVerificationError("no signature matches")
