"""The Python client against a real otpmint server: tests/api/clients.rs starts one and sets
OTPMINT_URL, OTPMINT_SECRET_KEY (a test tenant's: its codes go to its test inbox) and
OTPMINT_RETURN_URL (allowed for its links and hosted pages). Run by `cargo test`; alone:
`python3 -m unittest discover -s clients/python/tests` with those variables set."""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import otpmint  # noqa: E402

URL = os.environ.get("OTPMINT_URL")
SECRET_KEY = os.environ.get("OTPMINT_SECRET_KEY", "")
RETURN_URL = os.environ.get("OTPMINT_RETURN_URL", "")


def code_in_inbox(client: otpmint.Client, to: str, nth: int = 1) -> str:
    messages = client.test_inbox(to)
    assert len(messages) >= nth, messages
    # The newest first or last: take the code of the nth message in arrival order.
    ordered = sorted(messages, key=lambda m: m["received_at"])
    match = re.search(r"\b(\d{6})\b", ordered[nth - 1]["text"])
    assert match, ordered[nth - 1]["text"]
    return match.group(1)


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


@unittest.skipUnless(URL, "OTPMINT_URL is not set (tests/api/clients.rs sets it)")
class ServerTest(unittest.TestCase):
    def setUp(self):
        self.client = otpmint.Client(URL, SECRET_KEY)

    def test_mint_verify_and_claim_once(self):
        minted = self.client.mint(email="ada@example.com", purpose="login")
        self.assertTrue(minted["shareable_key"])
        self.assertTrue(minted.get("test"))
        key = minted["shareable_key"]
        code = code_in_inbox(self.client, "ada@example.com")
        wrong = "000000" if code != "000000" else "111111"
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.verify(key, wrong)
        self.assertEqual((e.exception.status, e.exception.code), (422, "otp_mismatch"))
        self.assertEqual(e.exception.body["attempts_remaining"], minted["max_attempts"] - 1)
        verified = self.client.verify(key, code)
        self.assertEqual(verified["email"], "ada@example.com")
        self.assertEqual(self.client.status(key)["status"], "verified")
        claimed = self.client.claim(key)
        self.assertEqual((claimed["email"], claimed["purpose"]), ("ada@example.com", "login"))
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.claim(key)
        self.assertEqual((e.exception.status, e.exception.code), (409, "already_claimed"))

    def test_resend_and_cancel(self):
        key = self.client.mint(email="bob@example.com")["shareable_key"]
        self.client.resend(key)
        self.assertEqual(self.client.status(key)["resends"], 1)
        self.client.cancel(key)
        self.assertEqual(self.client.status(key)["status"], "cancelled")
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.verify(key, code_in_inbox(self.client, "bob@example.com", 2))
        self.assertEqual((e.exception.status, e.exception.code), (410, "otp_cancelled"))

    def test_a_link_with_a_pkce_challenge_is_claimed_only_with_its_verifier(self):
        verifier, challenge = otpmint.pkce_pair()
        key = self.client.mint(
            email="cy@example.com", link_return_url=RETURN_URL, code_challenge=challenge
        )["shareable_key"]
        self.client.verify(key, code_in_inbox(self.client, "cy@example.com"))
        with self.assertRaises(otpmint.OtpmintError) as e:
            self.client.claim(key, "x" * 43)
        self.assertEqual((e.exception.status, e.exception.code), (403, "code_verifier_mismatch"))
        self.assertEqual(self.client.claim(key, verifier)["email"], "cy@example.com")

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
            otpmint.Client(URL, "sk_wrong").mint(email="ada@example.com")
        self.assertEqual((e.exception.status, e.exception.code), (401, "unauthorized"))
        self.assertNotIn("sk_wrong", repr(otpmint.Client(URL, "sk_wrong")))


if __name__ == "__main__":
    unittest.main()
