// The TypeScript client (compiled to dist/) against a real otpmint server:
// tests/api/clients.rs starts one and sets OTPMINT_URL, OTPMINT_SECRET_KEY (a test
// tenant's: its codes go to its test inbox) and OTPMINT_RETURN_URL. Run by `cargo test`;
// alone: `npm test` with those variables set.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Client, OtpmintError, WebhookVerificationError, pkcePair, verifyWebhook } from "../dist/index.js";

const URL = process.env.OTPMINT_URL;
const SECRET_KEY = process.env.OTPMINT_SECRET_KEY ?? "";
const RETURN_URL = process.env.OTPMINT_RETURN_URL ?? "";

async function codeInInbox(client, to, nth = 1) {
  const messages = (await client.testInbox(to)).sort((a, b) =>
    a.received_at.localeCompare(b.received_at),
  );
  assert.ok(messages.length >= nth, JSON.stringify(messages));
  const m = /\b(\d{6})\b/.exec(messages[nth - 1].text);
  assert.ok(m, messages[nth - 1].text);
  return m[1];
}

async function rejects(promise, status, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof OtpmintError, String(e));
    assert.equal(e.status, status, e.message);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

describe("webhook signatures", () => {
  // The example of the Standard Webhooks specification.
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const headers = {
    "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "Webhook-Timestamp": "1614265330",
    "Webhook-Signature": "v1,bm9ldGhlcg== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  };
  const body = '{"test": 2432232314}';

  it("verifies a signed event and returns it", async () => {
    assert.deepEqual(await verifyWebhook(secret, headers, body, { now: 1614265330 }), {
      test: 2432232314,
    });
    assert.deepEqual(await verifyWebhook(secret, new Headers(headers), body, { now: 1614265330 }), {
      test: 2432232314,
    });
  });

  it("refuses a changed body, a stale timestamp, another secret, missing headers", async () => {
    const refused = (p) => assert.rejects(p, WebhookVerificationError);
    await refused(verifyWebhook(secret, headers, '{"test": 1}', { now: 1614265330 }));
    await refused(verifyWebhook(secret, headers, body, { now: 1614265330 + 301 }));
    await refused(verifyWebhook("whsec_" + "A".repeat(43) + "=", headers, body, { now: 1614265330 }));
    await refused(verifyWebhook(secret, {}, body, { now: 1614265330 }));
  });
});

describe("against the server", { skip: URL ? false : "OTPMINT_URL is not set" }, () => {
  const client = new Client(URL ?? "http://127.0.0.1:9", SECRET_KEY);

  it("mints, verifies and claims once", async () => {
    const minted = await client.mint({ email: "ada@example.com", purpose: "login" });
    assert.equal(minted.test, true);
    const key = minted.shareable_key;
    const code = await codeInInbox(client, "ada@example.com");
    const wrong = code === "000000" ? "111111" : "000000";
    await assert.rejects(client.verify(key, wrong), (e) => {
      assert.equal(e.code, "otp_mismatch");
      assert.equal(e.body.attempts_remaining, minted.max_attempts - 1);
      return true;
    });
    const verified = await client.verify(key, code);
    assert.equal(verified.email, "ada@example.com");
    assert.equal((await client.status(key)).status, "verified");
    const claimed = await client.claim(key);
    assert.deepEqual([claimed.email, claimed.purpose], ["ada@example.com", "login"]);
    await rejects(client.claim(key), 409, "already_claimed");
  });

  it("resends and cancels", async () => {
    const { shareable_key: key } = await client.mint({ email: "bob@example.com" });
    await client.resend(key);
    assert.equal((await client.status(key)).resends, 1);
    await client.cancel(key);
    assert.equal((await client.status(key)).status, "cancelled");
    await rejects(client.verify(key, await codeInInbox(client, "bob@example.com", 2)), 410, "otp_cancelled");
  });

  it("claims a link with a PKCE challenge only with its verifier", async () => {
    const { verifier, challenge } = await pkcePair();
    const { shareable_key: key } = await client.mint({
      email: "cy@example.com",
      linkReturnUrl: RETURN_URL,
      codeChallenge: challenge,
    });
    await client.verify(key, await codeInInbox(client, "cy@example.com"));
    await rejects(client.claim(key, "x".repeat(43)), 403, "code_verifier_mismatch");
    assert.equal((await client.claim(key, verifier)).email, "cy@example.com");
  });

  it("starts hosted sessions open, not claimable before they are verified", async () => {
    const session = await client.createHostedSession({ returnUrl: RETURN_URL, purpose: "login" });
    assert.match(session.id, /^hs_/);
    assert.match(session.url, /^http/);
    assert.equal((await client.hostedSession(session.id)).status, "open");
    await rejects(client.claimHostedSession(session.id), 409, "not_verified");
  });

  it("names the problem of a wrong secret key", async () => {
    await rejects(new Client(URL, "sk_wrong").mint({ email: "ada@example.com" }), 401, "unauthorized");
  });
});
