"""A small typed client for otpmint's tenant API (API.md §18.6), standard library only.

    from otpmint import Client, verify_webhook
    otp = Client("https://otp.example.com", "sk_…")
    minted = otp.mint(email="ada@example.com", purpose="login")
    otp.verify(minted["shareable_key"], "042917")   # raises OtpmintError unless verified
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypedDict

__all__ = [
    "Client",
    "OtpmintError",
    "WebhookVerificationError",
    "pkce_pair",
    "verify_webhook",
]


class MintResult(TypedDict, total=False):
    shareable_key: str
    expires_at: str
    ttl_seconds: int
    code_length: int
    max_attempts: int
    test: bool


class VerifyResult(TypedDict, total=False):
    verified: bool
    email: str
    phone: str
    purpose: str
    verified_at: str


class Claimed(TypedDict, total=False):
    email: str
    phone: str
    purpose: str
    verified_at: str
    verified_via: str


class HostedSession(TypedDict, total=False):
    id: str
    url: str
    expires_at: str
    status: str
    email: str


class OtpmintError(Exception):
    """An answer other than the one asked for: its HTTP status, the problem's `code` and
    `detail`, and the whole body (`attempts_remaining`, `limit`, `reason`, …).
    `retry_after` is the `Retry-After` header's seconds, when there is one."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: Dict[str, Any],
        retry_after: Optional[int] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body
        self.retry_after = retry_after


class WebhookVerificationError(Exception):
    """A webhook whose signature, timestamp or headers do not check out."""


class Client:
    """The tenant API with one secret key. Every method raises `OtpmintError` on an answer
    other than its success status, and `urllib.error.URLError` when the server cannot be
    reached."""

    def __init__(self, base_url: str, secret_key: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret_key = secret_key
        self.timeout = timeout

    def __repr__(self) -> str:  # never the secret key
        return f"Client({self.base_url!r})"

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._secret_key}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                problem = json.loads(raw) if raw else {}
            except ValueError:
                problem = {"detail": raw.decode(errors="replace")}
            retry = e.headers.get("Retry-After")
            raise OtpmintError(
                e.code,
                str(problem.get("code", "")),
                str(problem.get("detail", "")),
                problem if isinstance(problem, dict) else {},
                int(retry) if retry and retry.isdigit() else None,
            ) from None

    def mint(
        self,
        *,
        email: Optional[str] = None,
        phone: Optional[str] = None,
        purpose: Optional[str] = None,
        locale: Optional[str] = None,
        delivery: Optional[str] = None,
        link_return_url: Optional[str] = None,
        code_challenge: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> MintResult:
        """Mint a code and send it (`POST /v1/otp`): 201 sent, 202 queued (async)."""
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
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        _, v = self._request("POST", "/v1/otp", body, headers)
        return v

    def verify(self, shareable_key: str, otp: str) -> VerifyResult:
        """Check a code (`POST /v1/otp/verify`). A wrong code raises `OtpmintError` 422
        `otp_mismatch` with `body["attempts_remaining"]`; a key that can never verify, 410."""
        _, v = self._request(
            "POST", "/v1/otp/verify", {"shareable_key": shareable_key, "otp": otp}
        )
        return v

    def status(self, shareable_key: str) -> Dict[str, Any]:
        """The key's status (`GET /v1/otp/{key}`)."""
        _, v = self._request("GET", f"/v1/otp/{_segment(shareable_key)}")
        return v

    def cancel(self, shareable_key: str) -> None:
        """Cancel a pending code (`DELETE /v1/otp/{key}`)."""
        self._request("DELETE", f"/v1/otp/{_segment(shareable_key)}")

    def resend(self, shareable_key: str) -> Dict[str, Any]:
        """Send a new code under the same key (`POST /v1/otp/{key}/resend`)."""
        _, v = self._request("POST", f"/v1/otp/{_segment(shareable_key)}/resend", {})
        return v

    def claim(self, shareable_key: str, code_verifier: Optional[str] = None) -> Claimed:
        """Redeem a verified key's outcome once (`POST /v1/otp/{key}/claim`)."""
        body = {} if code_verifier is None else {"code_verifier": code_verifier}
        _, v = self._request("POST", f"/v1/otp/{_segment(shareable_key)}/claim", body)
        return v

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
        _, v = self._request("POST", "/v1/tenant/hosted-sessions", body)
        return v

    def hosted_session(self, session_id: str) -> HostedSession:
        """A hosted session's status (`GET /v1/tenant/hosted-sessions/{id}`)."""
        _, v = self._request("GET", f"/v1/tenant/hosted-sessions/{_segment(session_id)}")
        return v

    def claim_hosted_session(
        self, session_id: str, code_verifier: Optional[str] = None
    ) -> Claimed:
        """Redeem a verified hosted session once (`POST …/hosted-sessions/{id}/claim`)."""
        body = {} if code_verifier is None else {"code_verifier": code_verifier}
        _, v = self._request(
            "POST", f"/v1/tenant/hosted-sessions/{_segment(session_id)}/claim", body
        )
        return v

    def test_inbox(self, to: str) -> List[Dict[str, Any]]:
        """Messages a test tenant or test recipient received (`GET /v1/tenant/test-inbox`)."""
        q = urllib.parse.urlencode({"to": to})
        _, v = self._request("GET", f"/v1/tenant/test-inbox?{q}")
        return v["messages"]


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def pkce_pair() -> Tuple[str, str]:
    """A PKCE verifier (keep it in the browser's session) and its S256 challenge (give it
    to `mint(code_challenge=…)` or `create_hosted_session(code_challenge=…)`)."""
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
    any JSON parsing. Raises `WebhookVerificationError`."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old or too new")
    if not secret.startswith("whsec_"):
        raise WebhookVerificationError("the secret is not a whsec_ secret")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not base64 after whsec_") from None
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        # Bytes: a header with other than ASCII in it is a mismatch, not an exception.
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return json.loads(body)
    raise WebhookVerificationError("no signature matches")
