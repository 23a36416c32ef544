"""The Python client: offline against local stand-ins, and against a real otpmint server:
tests/api/clients.rs starts one and sets OTPMINT_URL, OTPMINT_SECRET_KEY (a test tenant's:
its codes go to its test inbox) and OTPMINT_RETURN_URL (allowed for its links and hosted
pages). Run by `cargo test`; alone: `python3 -m unittest discover -s clients/python/tests`
with those variables set. With OTPMINT_LOOPBACK_WEBHOOKS=1 too (a server with
webhooks.allow_private_hosts and webhooks.allow_plaintext), a real webhook delivery to a
local receiver is verified as well."""

import copy
import email.message
import email.utils
import http.server
import json
import os
import pickle
import re
import secrets
import sys
import threading
import time
import typing
import unittest
import unittest.mock
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import otpmint  # noqa: E402

URL = os.environ.get("OTPMINT_URL")
SECRET_KEY = os.environ.get("OTPMINT_SECRET_KEY", "")
RETURN_URL = os.environ.get("OTPMINT_RETURN_URL", "")
LOOPBACK_WEBHOOKS = os.environ.get("OTPMINT_LOOPBACK_WEBHOOKS") == "1"
OPENAPI = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "openapi.json")


def fresh(name: str) -> str:
    """An address no earlier run used: the test inbox keeps messages for an hour."""
    return f"{name}-{secrets.token_hex(6)}@example.com"


def code_in_inbox(client: otpmint.Client, to: str, count: int = 1) -> str:
    """The code of the newest message to `to`, which has exactly `count` messages."""
    messages = client.test_inbox(to)
    assert len(messages) == count, messages
    match = re.search(r"\b(\d{6})\b", messages[0]["text"])
    assert match, messages[0]["text"]
    return match.group(1)


class LocalServer:
    """A local HTTP server answering `answer(request)` → (status, headers, body), never when
    it returns None, and closing the connection without an answer when it returns "close";
    `requests` records what it received (and the client's port: its connection). With
    `http11` its connections stay open between requests, as a real server's do."""

    def __init__(self, answer, http11=False):
        self.requests = []
        self.released = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request = {
                    "method": self.command,
                    "path": self.path,
                    "headers": self.headers,
                    "body": body,
                    "port": self.client_address[1],
                }
                outer.requests.append(request)
                reply = answer(request)
                if reply is None:
                    outer.released.wait(10)
                    self.close_connection = True
                    return
                if reply == "close":
                    self.close_connection = True
                    return
                if reply == "early hints":  # a 103, then the answer (naming this request)
                    self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                    self.wfile.flush()
                    time.sleep(0.05)
                    reply = json_answer({"status": "answer to " + self.path})
                if reply == "trickle":  # the headers at once, then a byte now and then
                    data = json.dumps(MINTED).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for i in range(len(data)):
                        if outer.released.wait(0.1):
                            return
                        try:
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                status, headers, data = reply[:3]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if reply[3:] == ("hang up",):  # closed after the answer, without a word
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_any

            def log_message(self, *args):
                pass

        if http11:
            Handler.protocol_version = "HTTP/1.1"

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def json_answer(value, status=200, headers=None):
    h = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return status, h, json.dumps(value).encode()


MINTED = {
    "shareable_key": "otp_x",
    "expires_at": "2026-11-22T10:15:00Z",
    "ttl_seconds": 600,
    "code_length": 6,
    "max_attempts": 5,
    "delivery": "sent",
    "locale": "en",
}


class WebhookTest(unittest.TestCase):
    # The example of the Standard Webhooks specification.
    SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    HEADERS = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": "v1,bm9ldGhlcg== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    BODY = b'{"test": 2432232314}'

    def test_a_signed_event_verifies_and_is_returned(self):
        event = otpmint.verify_webhook(self.SECRET, self.HEADERS, self.BODY, now=1614265330)
        self.assertEqual(event, {"test": 2432232314})

    def test_a_changed_body_a_stale_timestamp_or_another_secret_is_refused(self):
        with self.assertRaises(otpmint.WebhookVerificationError):
            otpmint.verify_webhook(self.SECRET, self.HEADERS, b'{"test": 1}', now=1614265330)
        with self.assertRaises(otpmint.WebhookVerificationError):
            otpmint.verify_webhook(self.SECRET, self.HEADERS, self.BODY, now=1614265330 + 301)
        with self.assertRaises(otpmint.WebhookVerificationError):
            otpmint.verify_webhook(
                "whsec_" + "A" * 43 + "=", self.HEADERS, self.BODY, now=1614265330
            )
        with self.assertRaises(otpmint.WebhookVerificationError):
            otpmint.verify_webhook(self.SECRET, {}, self.BODY, now=1614265330)

    def test_malformed_secrets_and_headers_raise_webhook_verification_error_only(self):
        def refused(secret, headers, body=self.BODY):
            with self.assertRaises(otpmint.WebhookVerificationError, msg=repr((secret, headers))):
                otpmint.verify_webhook(secret, headers, body, now=1614265330)

        for bad in ["whsec_!!!", "whsec_", "whsec_abc", "whsec_ AAAA", "whsec_ü", None]:
            refused(bad, self.HEADERS)
        refused("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", self.HEADERS)
        for name, value in [
            ("Webhook-Timestamp", "16142653e1"),
            ("Webhook-Timestamp", "١٦١٤٢٦٥٣٣٠"),  # digits, but not ASCII ones
            ("Webhook-Signature", "v1,!!!"),
            ("Webhook-Signature", "v1,ü"),
            ("Webhook-Signature", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ("Webhook-Id", "\udcff"),
        ]:
            refused(self.SECRET, {**self.HEADERS, name: value})
        refused(self.SECRET, None)
        refused(self.SECRET, self.HEADERS, body=None)
        # Repeated header lines joined with ", " still verify.
        joined = {
            **self.HEADERS,
            "Webhook-Signature": "v1,bm9ldGhlcg==, v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
        event = otpmint.verify_webhook(self.SECRET, joined, self.BODY, now=1614265330)
        self.assertEqual(event, {"test": 2432232314})

    def test_every_line_of_a_repeated_signature_header_counts(self):
        # http.server's headers keep a name once per line it came in: the matching
        # signature on the first line of two verifies, as with the lines joined.
        headers = email.message.Message()
        headers["Webhook-Id"] = self.HEADERS["Webhook-Id"]
        headers["Webhook-Timestamp"] = self.HEADERS["Webhook-Timestamp"]
        headers["Webhook-Signature"] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        headers["Webhook-Signature"] = "v1,bm9ldGhlcg=="
        event = otpmint.verify_webhook(self.SECRET, headers, self.BODY, now=1614265330)
        self.assertEqual(event, {"test": 2432232314})
        # Two different ids (or timestamps) are not guessed between.
        headers["Webhook-Id"] = "msg_another"
        with self.assertRaises(otpmint.WebhookVerificationError):
            otpmint.verify_webhook(self.SECRET, headers, self.BODY, now=1614265330)


class OfflineTest(unittest.TestCase):
    """The client against local stand-ins of a server (and of what sits in front of one)."""

    def serve(self, answer):
        server = LocalServer(answer)
        self.addCleanup(server.close)
        return server

    def failure(self, call) -> otpmint.OtpmintError:
        with self.assertRaises(otpmint.OtpmintError) as e:
            call()
        return e.exception

    def test_the_answer_types_are_those_of_docs_openapi_json(self):
        if not os.path.exists(OPENAPI):
            self.skipTest("docs/openapi.json is not beside this checkout")
        with open(OPENAPI, encoding="utf-8") as f:
            schemas = json.load(f)["components"]["schemas"]
        # Client type ↔ server schema; keys that must be Literal.
        pairs = {
            "MintResult": ("MintOut", {"delivery"}),
            "ResendResult": ("ResendOut", {"delivery"}),
            "VerifyResult": ("VerifyOut", set()),
            "Claimed": ("ClaimedOut", {"verified_via"}),
            "OtpStatus": ("StatusOut", {"status", "verified_via"}),
            "DeliveryStatus": ("DeliveryOut", {"mode", "status"}),
            "HostedSession": ("HostedOut", set()),
            "HostedStatus": ("HostedStatusOut", {"status"}),
            "TestMessage": ("TestMessageOut", set()),
            "Webhook": ("WebhookOut", set()),
        }

        def flatten(schema):
            if "$ref" in schema:
                return flatten(schemas[schema["$ref"].split("/")[-1]])
            props = dict(schema.get("properties", {}))
            required = set(schema.get("required", []))
            for part in schema.get("allOf", []):
                p, r = flatten(part)
                props.update(p)
                required |= r
            return props, required

        names = {"str": "string", "int": "integer", "bool": "boolean", "NoneType": "null"}
        for name, (schema_name, enums) in pairs.items():
            cls = getattr(otpmint, name)
            props, required = flatten(schemas[schema_name])
            hints = typing.get_type_hints(cls)
            self.assertEqual(sorted(hints), sorted(props), name)
            self.assertEqual(set(cls.__required_keys__), required, name)
            for key, hint in hints.items():
                where = f"{name}.{key}"
                field = props[key]
                parts = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
                kinds, literals, items = set(), [], []
                for part in parts:
                    if typing.get_origin(part) is list:
                        # A list: its items' closed set is the document's `items.enum`.
                        kinds.add("array")
                        (item,) = typing.get_args(part)
                        items.extend(typing.get_args(item))
                    elif typing.get_origin(part) is typing.Literal:
                        kinds.add("string")
                        literals.extend(typing.get_args(part))
                    elif part.__name__ in names:
                        kinds.add(names[part.__name__])
                    else:  # a nested TypedDict
                        kinds.add(part.__name__)
                if "$ref" in field:
                    ref = field["$ref"].split("/")[-1]
                    expected = {k for k, v in pairs.items() if v[0] == ref} or {ref}
                else:
                    t = field["type"]
                    expected = set(t if isinstance(t, list) else [t])
                self.assertEqual(kinds, expected, where)
                if "array" in kinds:
                    self.assertEqual(sorted(items), sorted(field["items"].get("enum", [])), where)
                if key in enums or literals:
                    self.assertIn(key, enums, f"{where} is a Literal: list it here")
                    named = re.findall(r"`([a-z_]+)`", field["description"])
                    self.assertEqual(sorted(literals), sorted(set(named)), where)
                    if "enum" in field:  # the document's closed set, null aside
                        values = [v for v in field["enum"] if v is not None]
                        self.assertEqual(sorted(literals), sorted(values), f"{where} enum")

    def test_a_redirect_is_an_error_and_the_key_goes_nowhere_else(self):
        elsewhere = self.serve(lambda r: json_answer(MINTED, 201))

        def redirect(request):
            status = 303 if "see-other" in request["path"] else 307
            return status, {"Location": elsewhere.url + "/v1/otp"}, b"moved"

        server = self.serve(redirect)
        client = otpmint.Client(server.url, "sk_test_secret")
        e = self.failure(lambda: client.mint(email="ada@example.com"))
        self.assertEqual((e.status, e.code, e.body), (307, "", {}))
        self.assertRegex(e.detail, r"^a redirect to http://127\.0\.0\.1:\d+/v1/otp, not followed$")
        for status in (301, 302, 303, 308):
            server_n = self.serve(lambda r, s=status: (s, {"Location": elsewhere.url}, b""))
            e = self.failure(lambda: otpmint.Client(server_n.url, "sk_test_secret").status("k"))
            self.assertEqual(e.status, status)
        self.assertEqual(self.failure(lambda: client.status("see-other")).status, 303)
        self.assertEqual(server.requests[0]["headers"]["Authorization"], "Bearer sk_test_secret")
        self.assertEqual(elsewhere.requests, [])

    def test_a_key_read_from_a_file_is_trimmed_and_a_bad_one_never_echoed(self):
        server = self.serve(lambda r: json_answer({"messages": []}))
        otpmint.Client(server.url, " sk_test_secret\r\n").test_inbox()
        otpmint.Client(server.url, "\ufeffsk_test_secret\n").test_inbox()
        for request in server.requests:
            self.assertEqual(request["headers"]["Authorization"], "Bearer sk_test_secret")
        self.assertEqual(len(server.requests), 2)
        for bad in ["", " \n", "sk_test_se\ncret", "sk_test_séc", "sk test"]:
            with self.assertRaises(ValueError) as caught:
                otpmint.Client(server.url, bad)
            self.assertNotIn("sk_test", str(caught.exception) + repr(caught.exception))

    def test_only_the_documented_success_is_returned(self):
        answers = [
            (200, {"Content-Type": "text/html"}, b"<html>hello</html>"),  # a proxy's page
            json_answer(["otp_x"], 201),  # JSON, not an object
            json_answer("otp_x", 201),
            (201, {"Content-Type": "text/plain"}, json.dumps(MINTED).encode()),
            (201, {"Content-Type": "application/json"}, b"{"),
            (201, {"Content-Type": "application/json"}, b"\xff\xfe"),
            (201, {}, b""),
            json_answer(MINTED, 200),  # the right body, a status the route never answers
        ]
        for i, answer in enumerate(answers):
            server = self.serve(lambda r, a=answer: a)
            e = self.failure(lambda: otpmint.Client(server.url, "sk").mint(email="a@b.example"))
            self.assertEqual(e.status, answer[0])
            self.assertEqual(e.code, "")
            self.assertEqual(e.body, MINTED if i == len(answers) - 1 else {})
            self.assertTrue(e.detail.startswith("not the answer expected"), e.detail)
        server = self.serve(lambda r: answers[0])
        e = self.failure(lambda: otpmint.Client(server.url, "sk").mint(email="a@b.example"))
        self.assertTrue(e.detail.endswith("text/html): <html>hello</html>"), e.detail)
        # A cancel answers 204 and nothing else.
        server = self.serve(lambda r: json_answer({}, 200))
        self.assertEqual(self.failure(lambda: otpmint.Client(server.url, "sk").cancel("k")).status, 200)
        # What succeeds: 201 and 202 for a mint, 204 for a cancel.
        for status in (201, 202):
            server = self.serve(lambda r, s=status: json_answer(MINTED, s))
            self.assertEqual(otpmint.Client(server.url, "sk").mint(email="a@b.example"), MINTED)
        server = self.serve(lambda r: (204, {}, b""))
        self.assertIsNone(otpmint.Client(server.url, "sk").cancel("k"))

    def test_error_bodies_keep_their_text_and_retry_after_is_read(self):
        cases = [
            (json_answer("just a string", 502), "", '"just a string"'),
            (json_answer(["a", "b"], 503), "", '["a", "b"]'),
            ((502, {"Content-Type": "text/plain"}, b"Bad Gateway from nginx"), "", "Bad Gateway from nginx"),
            (json_answer({"error": "not a problem"}, 500), "", '{"error": "not a problem"}'),
            (json_answer({"code": "rate_limited", "detail": "Slow down.", "limit": "ip"}, 429), "rate_limited", "Slow down."),
        ]
        for answer, code, detail in cases:
            server = self.serve(lambda r, a=answer: a)
            e = self.failure(lambda: otpmint.Client(server.url, "sk").status("otp_x"))
            self.assertEqual((e.status, e.code, e.detail), (answer[0], code, detail))
            self.assertIn(detail, str(e))

        def retry(value):
            server = self.serve(
                lambda r: json_answer({"code": "rate_limited", "detail": "d"}, 429, {"Retry-After": value})
            )
            return self.failure(lambda: otpmint.Client(server.url, "sk").mint(email="a@b.example")).retry_after

        self.assertEqual(retry("17"), 17)
        self.assertEqual(retry("0"), 0)
        at = time.time() + 120
        imf = email.utils.formatdate(at, usegmt=True)  # "Wed, 26 Nov 2026 08:00:00 GMT"
        self.assertTrue(115 <= retry(imf) <= 120, imf)
        _, dd, mon, yyyy, hms, _ = imf.split(" ")
        self.assertGreaterEqual(retry(f"Wednesday, {dd}-{mon}-{yyyy[2:]} {hms} GMT"), 115)
        self.assertGreaterEqual(retry(f"Wed {mon} {int(dd):2d} {hms} {yyyy}"), 115)
        self.assertEqual(retry("Sun, 06 Nov 1994 08:49:37 GMT"), 0)  # past: now, never negative
        self.assertIsNone(retry("soon"))
        self.assertIsNone(retry("-5"))

    def test_an_error_keeps_the_request_id_and_survives_pickling_and_copying(self):
        server = self.serve(
            lambda r: json_answer(
                {"code": "rate_limited", "detail": "Slow down.", "limit": "ip"},
                429,
                {"Retry-After": "7", "X-Request-Id": "req-42"},
            )
        )
        e = self.failure(lambda: otpmint.Client(server.url, "sk").status("otp_x"))
        self.assertEqual(e.request_id, "req-42")
        # A worker process raises it to its caller by pickling it.
        for again in [pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)]:
            self.assertIsInstance(again, otpmint.OtpmintError)
            self.assertEqual(
                (again.status, again.code, again.detail, again.body, again.retry_after, again.request_id),
                (429, "rate_limited", "Slow down.", e.body, 7, "req-42"),
            )
            self.assertEqual(str(again), str(e))

    def test_a_timeout_is_a_positive_number_of_seconds_or_none(self):
        for bad in [0, -1, float("nan"), "10", True]:
            with self.assertRaises(ValueError):
                otpmint.Client("http://127.0.0.1:9", "sk", timeout=bad)
        import decimal

        self.assertEqual(otpmint.Client("http://127.0.0.1:9", "sk", timeout=decimal.Decimal("2.5")).timeout, 2.5)
        for none in [None, float("inf")]:
            self.assertIsNone(otpmint.Client("http://127.0.0.1:9", "sk", timeout=none).timeout)
        server = self.serve(lambda r: json_answer({"messages": []}))
        client = otpmint.Client(server.url, "sk", timeout=None)
        self.assertEqual(client.test_inbox(), [])
        self.assertEqual(client.test_inbox("a+b@c.example"), [])
        self.assertEqual(
            [r["path"] for r in server.requests],
            ["/v1/tenant/test-inbox", "/v1/tenant/test-inbox?to=a%2Bb%40c.example"],
        )

    def test_no_answer_in_time_raises_timeout_error_and_no_server_url_error(self):
        silent = self.serve(lambda r: None)
        started = time.monotonic()
        with self.assertRaises(TimeoutError):
            otpmint.Client(silent.url, "sk", timeout=0.3).status("otp_x")
        self.assertLess(time.monotonic() - started, 5)
        closed = LocalServer(lambda r: None)
        closed.close()  # nothing listens on its port now
        with self.assertRaises(urllib.error.URLError):
            otpmint.Client(closed.url, "sk").status("otp_x")
        hangs_up = self.serve(lambda r: "close")
        with self.assertRaises(urllib.error.URLError):
            otpmint.Client(hangs_up.url, "sk").status("otp_x")

    def test_calls_in_a_row_share_one_kept_alive_connection(self):
        server = LocalServer(lambda r: json_answer({"status": "pending"}), http11=True)
        self.addCleanup(server.close)
        with otpmint.Client(server.url, "sk") as client:
            for _ in range(3):
                self.assertEqual(client.status("otp_x")["status"], "pending")
            client.verify("otp_x", "123456")
        self.assertEqual(len({r["port"] for r in server.requests}), 1, server.requests)
        # Each request whole and with its own headers on the shared connection.
        self.assertEqual([r["method"] for r in server.requests], ["GET"] * 3 + ["POST"])
        self.assertEqual(server.requests[3]["headers"]["Authorization"], "Bearer sk")
        self.assertEqual(json.loads(server.requests[3]["body"]), {"shareable_key": "otp_x", "otp": "123456"})
        # A server that closes after each answer (HTTP/1.0, or `Connection: close`) gets a new
        # connection each time, and nothing fails.
        closing = self.serve(lambda r: json_answer({"status": "pending"}))
        client = otpmint.Client(closing.url, "sk")
        for _ in range(3):
            client.status("otp_x")
        self.assertEqual(len({r["port"] for r in closing.requests}), 3)

    def test_a_connection_the_server_closed_is_never_used_again(self):
        # The server closes each connection after its answer without saying so (as one does
        # when a connection stays idle past its keep-alive time).
        server = LocalServer(lambda r: json_answer({"status": "pending"}) + ("hang up",), http11=True)
        self.addCleanup(server.close)
        client = otpmint.Client(server.url, "sk")
        client.status("otp_x")
        time.sleep(0.2)  # the close reaches the client
        client.verify("otp_x", "123456")  # a POST: never sent on a connection seen closed
        self.assertEqual(len({r["port"] for r in server.requests}), 2, server.requests)
        self.assertEqual([r["method"] for r in server.requests], ["GET", "POST"])

    def test_a_kept_alive_connection_lost_before_its_answer_is_retried_only_where_safe(self):
        # The second request on a connection finds it closing: no answer comes.
        seen = set()

        def answer(r):
            if r["port"] in seen:
                return "close"
            seen.add(r["port"])
            return json_answer({"status": "pending", "shareable_key": "otp_x"})

        server = LocalServer(answer, http11=True)
        self.addCleanup(server.close)
        client = otpmint.Client(server.url, "sk")
        client.status("otp_x")
        # A GET changes nothing twice: sent again on a new connection, and answered.
        self.assertEqual(client.status("otp_x")["status"], "pending")
        self.assertEqual(len(server.requests), 3)
        # A verify may have been taken: the loss is the caller's to see, not sent again; so
        # is a cancel's (a second one answers 410) and a webhook's (stored again, it answers
        # without the secret).
        with self.assertRaises(urllib.error.URLError):
            client.verify("otp_x", "123456")
        self.assertEqual([r["method"] for r in server.requests].count("POST"), 1)
        client.status("otp_x")
        with self.assertRaises(urllib.error.URLError):
            client.cancel("otp_x")
        self.assertEqual([r["method"] for r in server.requests].count("DELETE"), 1)

    def test_an_informational_answer_leaves_nothing_for_the_next_call(self):
        server = LocalServer(
            lambda r: "early hints" if r["path"].endswith("/first") else json_answer({"status": "answer to " + r["path"]}),
            http11=True,
        )
        self.addCleanup(server.close)
        client = otpmint.Client(server.url, "sk")
        with self.assertRaises(otpmint.OtpmintError) as e:
            client.status("first")
        self.assertEqual(e.exception.status, 103)
        # The 200 that followed the 103 belongs to the first call, never to this one.
        self.assertEqual(client.status("second")["status"], "answer to /v1/otp/second")

    def test_requests_say_who_sends_them_and_a_bare_ipv6_address_takes_the_default_port(self):
        server = LocalServer(lambda r: json_answer({"status": "pending"}), http11=True)
        self.addCleanup(server.close)
        otpmint.Client(server.url, "sk").status("otp_x")
        self.assertTrue(server.requests[0]["headers"]["User-Agent"].startswith("otpmint-python/"))
        for url, port in [("http://[::1]", 80), ("https://[::1]", 443), ("http://[::1]:8080", 8080)]:
            conn = otpmint.Client(url, "sk")._pool.new(1.0)
            self.assertEqual((conn.host, conn.port), ("::1", port), url)

    def test_a_deadline_gives_a_connection_opened_late_only_what_is_left(self):
        deadline = otpmint._Deadline(10.0)
        self.addCleanup(deadline.cancel)
        time.sleep(0.2)
        self.assertLess(deadline.remaining(), 9.9)
        self.assertGreater(deadline.remaining(), 5)
        self.assertIsNone(otpmint._Deadline(None).remaining())

    @unittest.skipUnless(hasattr(os, "fork"), "fork is POSIX only")
    def test_a_forked_process_never_shares_its_parents_connections(self):
        server = LocalServer(lambda r: json_answer({"status": r["path"]}), http11=True)
        self.addCleanup(server.close)
        client = otpmint.Client(server.url, "sk", timeout=5)
        client.status("parent-1")
        pid = os.fork()
        if pid == 0:  # the child: its own connection, its own answer
            ok = False
            try:
                ok = client.status("child")["status"] == "/v1/otp/child"
            finally:
                os._exit(0 if ok else 1)
        _, code = os.waitpid(pid, 0)
        self.assertEqual(code, 0)
        # The parent's kept connection still carries the parent's next call, answered.
        self.assertEqual(client.status("parent-2")["status"], "/v1/otp/parent-2")
        ports = {r["path"]: r["port"] for r in server.requests}
        self.assertEqual(ports["/v1/otp/parent-1"], ports["/v1/otp/parent-2"])
        self.assertNotEqual(ports["/v1/otp/child"], ports["/v1/otp/parent-1"])

    def test_a_proxy_the_environment_names_is_used_as_urllib_would(self):
        proxy = self.serve(lambda r: json_answer({"status": "pending"}))
        target = "http://otp.example.invalid:8080"
        with unittest.mock.patch.dict(
            "os.environ", {"http_proxy": proxy.url, "HTTP_PROXY": proxy.url, "no_proxy": "", "NO_PROXY": ""}
        ):
            self.assertEqual(otpmint.Client(target, "sk").status("otp_x")["status"], "pending")
        self.assertEqual(proxy.requests[0]["path"], target + "/v1/otp/otp_x")

    def test_an_answer_that_trickles_in_is_bounded_by_the_timeout_as_a_whole(self):
        # Each byte comes well within the timeout; the whole answer would take many times it.
        slow = self.serve(lambda r: "trickle")
        started = time.monotonic()
        with self.assertRaises(TimeoutError):
            otpmint.Client(slow.url, "sk", timeout=0.5).status("otp_x")
        self.assertLess(time.monotonic() - started, 5)

    def test_the_keys_dot_and_dot_dot_are_answered_as_the_server_does(self):
        server = self.serve(lambda r: json_answer({"code": "otp_not_found", "detail": "No such code."}, 404))
        client = otpmint.Client(server.url + "/", "sk")
        for call in [
            lambda: client.status(".."),
            lambda: client.status("."),
            lambda: client.cancel(".."),
            lambda: client.resend(".."),
            lambda: client.claim(".", "x" * 43),
            # `/v1/otp/` and `/v1/otp/verify` are other routes (404 `not_found`, 405).
            lambda: client.status(""),
            lambda: client.status("verify"),
            lambda: client.cancel("verify"),
            lambda: client.cancel(""),
        ]:
            e = self.failure(call)
            self.assertEqual((e.status, e.code), (404, "otp_not_found"))
        for call in [
            lambda: client.hosted_session(".."),
            lambda: client.claim_hosted_session("."),
            lambda: client.hosted_session(""),
        ]:
            e = self.failure(call)
            self.assertEqual((e.status, e.code), (404, "session_not_found"))
        self.assertEqual(server.requests, [])
        # Anything else is one percent-encoded segment.
        for key in ["a/b?c#d", "...", "%2E%2E", ".%2e"]:
            self.assertEqual(self.failure(lambda: client.status(key)).code, "otp_not_found")
        self.assertEqual(
            [r["path"] for r in server.requests],
            ["/v1/otp/a%2Fb%3Fc%23d", "/v1/otp/...", "/v1/otp/%252E%252E", "/v1/otp/.%252e"],
        )

    def test_a_bad_idempotency_key_is_refused_before_any_request_and_a_replay_is_told(self):
        replayed = {"value": False}

        def answer(request):
            headers = {"Idempotent-Replayed": "true"} if replayed["value"] else {}
            return json_answer(MINTED, 201, headers)

        server = self.serve(answer)
        client = otpmint.Client(server.url, "sk")
        for bad in ["", "schlüssel", "a b", "ключ", "x" * 256, "tab\there", "emoji🙂", 42]:
            with self.assertRaisesRegex(ValueError, "idempotency_key must be 1–255 visible ASCII"):
                client.mint(email="a@b.example", idempotency_key=bad)
        with self.assertRaises(ValueError):
            client.mint(email="a@b.example", code_challenge="x")
        self.assertEqual(server.requests, [])

        first = client.mint(email="a@b.example", idempotency_key="order-42")
        self.assertEqual(server.requests[0]["headers"]["Idempotency-Key"], "order-42")
        self.assertFalse(otpmint.was_replayed(first))
        replayed["value"] = True
        again = client.mint(email="a@b.example", idempotency_key="order-42")
        self.assertTrue(otpmint.was_replayed(again))
        # The answer is the server's body, nothing added to it.
        self.assertEqual(again, MINTED)
        self.assertEqual(json.loads(json.dumps(again)), MINTED)
        with self.assertRaises(TypeError):
            otpmint.was_replayed(dict(again))

    def test_a_replayed_failure_is_told_and_the_first_field_at_fault_is_named(self):
        replayed = {"value": True}

        def failed(request):
            headers = {"Content-Type": "application/problem+json"}
            if replayed["value"]:
                headers["Idempotent-Replayed"] = "true"
            body = {"type": "/problems/delivery_failed", "code": "delivery_failed",
                    "status": 502, "detail": "d", "reason": "smtp_unreachable"}
            return json_answer(body, 502, headers)

        client = otpmint.Client(self.serve(failed).url, "sk")
        # A 502 kept under its idempotency key (API.md §9) says it is a replay.
        e = self.failure(lambda: client.mint(email="a@b.example", idempotency_key="k-1"))
        self.assertTrue(e.replayed)
        self.assertEqual(e.body["reason"], "smtp_unreachable")
        self.assertTrue(pickle.loads(pickle.dumps(e)).replayed)
        replayed["value"] = False
        e = self.failure(lambda: client.mint(email="a@b.example", idempotency_key="k-1"))
        self.assertFalse(e.replayed)

        errors = [
            {"field": "to", "message": "must be an address"},
            {"field": "purpose", "message": "too long"},
        ]

        def invalid(request):
            body = {"type": "/problems/invalid_request", "code": "invalid_request",
                    "status": 400, "detail": "d", "errors": errors}
            return json_answer(body, 400, {"Content-Type": "application/problem+json"})

        client = otpmint.Client(self.serve(invalid).url, "sk")
        e = self.failure(lambda: client.test_inbox("x"))
        self.assertEqual(
            str(e), "400 invalid_request: d (to: must be an address; 1 more in body['errors'])"
        )
        self.assertEqual(e.body["errors"], errors)


@unittest.skipUnless(URL, "OTPMINT_URL is not set (tests/api/clients.rs sets it)")
class ServerTest(unittest.TestCase):
    def setUp(self):
        self.client = otpmint.Client(URL, SECRET_KEY)

    def test_mint_verify_and_claim_once(self):
        ada = fresh("ada")
        minted = self.client.mint(email=ada, purpose="login")
        self.assertTrue(minted["shareable_key"])
        self.assertIs(minted.get("test"), True)
        self.assertEqual(minted["delivery"], "test")
        self.assertIsInstance(minted["locale"], str)
        key = minted["shareable_key"]
        code = code_in_inbox(self.client, ada)
        wrong = "000000" if code != "000000" else "111111"
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.verify(key, wrong)
        self.assertEqual((e.exception.status, e.exception.code), (422, "otp_mismatch"))
        self.assertEqual(e.exception.body["attempts_remaining"], minted["max_attempts"] - 1)
        verified = self.client.verify(key, code)
        self.assertIs(verified["verified"], True)
        self.assertEqual(verified["email"], ada)
        status = self.client.status(key)
        self.assertEqual(status["status"], "verified")
        self.assertEqual(status["verified_via"], "code")
        self.assertEqual(status["delivery"]["status"], "test")
        self.assertEqual(status["email"], ada)
        claimed = self.client.claim(key)
        self.assertEqual(
            (claimed["email"], claimed["purpose"], claimed["verified_via"]), (ada, "login", "code")
        )
        self.assertIs(self.client.status(key).get("claimed"), True)
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.claim(key)
        self.assertEqual((e.exception.status, e.exception.code), (409, "already_claimed"))

    def test_resend_and_cancel(self):
        bob = fresh("bob")
        key = self.client.mint(email=bob)["shareable_key"]
        resent = self.client.resend(key)
        self.assertEqual(
            (resent["shareable_key"], resent["resends"], resent["delivery"]), (key, 1, "test")
        )
        self.assertEqual(self.client.status(key)["resends"], 1)
        self.client.cancel(key)
        self.assertEqual(self.client.status(key)["status"], "cancelled")
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.verify(key, code_in_inbox(self.client, bob, 2))
        self.assertEqual((e.exception.status, e.exception.code), (410, "otp_cancelled"))

    def test_a_link_with_a_pkce_challenge_is_claimed_only_with_its_verifier(self):
        cy = fresh("cy")
        verifier, challenge = otpmint.pkce_pair()
        key = self.client.mint(email=cy, link_return_url=RETURN_URL, code_challenge=challenge)[
            "shareable_key"
        ]
        self.client.verify(key, code_in_inbox(self.client, cy))
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.claim(key, "x" * 43)
        self.assertEqual((e.exception.status, e.exception.code), (403, "code_verifier_mismatch"))
        self.assertEqual(self.client.claim(key, verifier)["email"], cy)

    def test_hosted_sessions_start_open_and_are_not_claimable_unverified(self):
        session = self.client.create_hosted_session(return_url=RETURN_URL, purpose="login")
        self.assertTrue(session["id"].startswith("hs_"))
        self.assertTrue(session["url"].startswith("http"))
        self.assertEqual(self.client.hosted_session(session["id"])["status"], "open")
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.claim_hosted_session(session["id"])
        self.assertEqual((e.exception.status, e.exception.code), (409, "not_verified"))

    def test_a_wrong_secret_key_is_an_error_naming_its_code(self):
        with self.assertRaises(otpmint.OtpmintError) as e:
            otpmint.Client(URL, "sk_wrong").mint(email=fresh("ada"))
        self.assertEqual((e.exception.status, e.exception.code), (401, "unauthorized"))
        self.assertNotIn("sk_wrong", repr(otpmint.Client(URL, "sk_wrong")))

    def test_an_idempotent_replay_is_told_from_the_first_answer_and_dot_keys_are_unknown(self):
        dee = fresh("dee")
        key = f"client-test-{secrets.token_hex(8)}"
        first = self.client.mint(email=dee, idempotency_key=key)
        again = self.client.mint(email=dee, idempotency_key=key)
        self.assertEqual((otpmint.was_replayed(first), otpmint.was_replayed(again)), (False, True))
        self.assertEqual(again, first)
        code_in_inbox(self.client, dee, 1)  # the repeat sent nothing
        # The whole inbox (no `to`) holds it too.
        self.assertIn(dee, [m["to"] for m in self.client.test_inbox()])
        for call in [
            lambda: self.client.status(".."),
            lambda: self.client.status("."),
            lambda: self.client.cancel(".."),
        ]:
            with self.assertRaises(otpmint.OtpmintError) as e:
                call()
            self.assertEqual((e.exception.status, e.exception.code), (404, "otp_not_found"))

    if LOOPBACK_WEBHOOKS:

        def test_the_signature_of_a_webhook_the_server_sent_verifies(self):
            receiver = LocalServer(lambda r: (204, {}, b""))
            self.addCleanup(receiver.close)

            url = receiver.url + "/hooks/otp"
            first = self.client.set_webhook(url, ["otp.verified"])
            self.addCleanup(self._delete_webhook)
            self.assertTrue((first.get("secret") or "").startswith("whsec_"))
            self.assertEqual((first["url"], first["events"]), (url, ["otp.verified"]))
            # Stored again: the same secret, not shown; a rotation shows a new one.
            again = self.client.set_webhook(url, ["otp.verified", "otp.sent"])
            self.assertIsNone(again.get("secret"))
            hook = self.client.rotate_webhook_secret()
            self.assertTrue((hook.get("secret") or "").startswith("whsec_"))
            self.assertNotEqual(hook.get("secret"), first.get("secret"))
            eve = fresh("eve")
            key = self.client.mint(email=eve)["shareable_key"]
            self.client.verify(key, code_in_inbox(self.client, eve))
            event = None
            for _ in range(150):
                for req in list(receiver.requests):
                    e = otpmint.verify_webhook(hook["secret"], req["headers"], req["body"])
                    if e["type"] == "otp.verified" and e["data"]["shareable_key"] == key:
                        event = e
                if event:
                    break
                time.sleep(0.2)
            self.assertIsNotNone(event, receiver.requests)
            self.assertEqual(event["data"]["email"], eve)
            signed = next(r for r in receiver.requests if key.encode() in r["body"])
            with self.assertRaises(otpmint.WebhookVerificationError):
                otpmint.verify_webhook(
                    hook["secret"], signed["headers"], signed["body"].replace(key.encode(), b"otp_other")
                )
            self.client.delete_webhook()
            with self.assertRaises(otpmint.OtpmintError) as e:
                self.client.delete_webhook()
            self.assertEqual((e.exception.status, e.exception.code), (404, "webhook_not_found"))

        def _delete_webhook(self):
            try:
                self.client.delete_webhook()
            except otpmint.OtpmintError:
                pass


if __name__ == "__main__":
    unittest.main()
