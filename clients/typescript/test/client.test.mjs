// The TypeScript client (compiled to dist/): offline against local stand-ins, and against a
// real otpmint server: tests/api/clients.rs starts one and sets OTPMINT_URL,
// OTPMINT_SECRET_KEY (a test tenant's: its codes go to its test inbox) and
// OTPMINT_RETURN_URL. Run by `cargo test`; alone: `npm test` with those variables set. With
// OTPMINT_LOOPBACK_WEBHOOKS=1 too (a server with webhooks.allow_private_hosts and
// webhooks.allow_plaintext), a real webhook delivery to a local receiver is verified as well.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";

import {
  Client,
  OtpmintError,
  WebhookVerificationError,
  pkcePair,
  verifyWebhook,
  wasReplayed,
} from "../dist/index.js";

const URL_ = process.env.OTPMINT_URL;
const SECRET_KEY = process.env.OTPMINT_SECRET_KEY ?? "";
const RETURN_URL = process.env.OTPMINT_RETURN_URL ?? "";
const LOOPBACK_WEBHOOKS = process.env.OTPMINT_LOOPBACK_WEBHOOKS === "1";

/** An address no earlier run used: the test inbox keeps messages for an hour. */
function fresh(name) {
  return `${name}-${randomBytes(6).toString("hex")}@example.com`;
}

/** The code of the newest message to `to`, which has exactly `count` messages. */
async function codeInInbox(client, to, count = 1) {
  const messages = await client.testInbox(to);
  assert.equal(messages.length, count, JSON.stringify(messages));
  const m = /\b(\d{6})\b/.exec(messages[0].text);
  assert.ok(m, messages[0].text);
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

/** A `fetch` that answers with `answer(url, init)` (a Response) and records its calls. */
function fakeFetch(answer) {
  const calls = [];
  const f = async (url, init) => {
    calls.push({ url: String(url), init });
    return answer(String(url), init);
  };
  return { fetch: f, calls };
}

function json(value, status = 200, headers = {}) {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

const MINTED = {
  shareable_key: "otp_x",
  expires_at: "2026-11-22T10:15:00Z",
  ttl_seconds: 600,
  code_length: 6,
  max_attempts: 5,
  delivery: "sent",
  locale: "en",
};

/** A local HTTP server; `requests` records what it received. */
async function serve(handler) {
  const requests = [];
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const r = { method: req.method, url: req.url, headers: req.headers, body };
      requests.push(r);
      handler(r, res);
    });
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((done) => server.close(done));
    },
  };
}

async function rejectsWith(promise, check) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof OtpmintError, String(e));
    check(e);
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
    // The raw bytes, as Node's servers hand them over (a Buffer is a Uint8Array).
    for (const raw of [Buffer.from(body), new TextEncoder().encode(body)]) {
      assert.deepEqual(await verifyWebhook(secret, headers, raw, { now: 1614265330 }), {
        test: 2432232314,
      });
    }
    await assert.rejects(
      verifyWebhook(secret, headers, Buffer.from('{"test": 1}'), { now: 1614265330 }),
      WebhookVerificationError,
    );
  });

  it("refuses a changed body, a stale timestamp, another secret, missing headers", async () => {
    const refused = (p) => assert.rejects(p, WebhookVerificationError);
    await refused(verifyWebhook(secret, headers, '{"test": 1}', { now: 1614265330 }));
    await refused(verifyWebhook(secret, headers, body, { now: 1614265330 + 301 }));
    await refused(verifyWebhook("whsec_" + "A".repeat(43) + "=", headers, body, { now: 1614265330 }));
    await refused(verifyWebhook(secret, {}, body, { now: 1614265330 }));
  });

  it("refuses malformed secrets and headers with WebhookVerificationError only", async () => {
    const now = { now: 1614265330 };
    const refused = (p, why) =>
      assert.rejects(p, (e) => {
        assert.ok(e instanceof WebhookVerificationError, `${why}: ${e}`);
        return true;
      });
    for (const bad of ["whsec_!!!", "whsec_", "whsec_abc", "whsec_ AAAA", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", undefined]) {
      await refused(verifyWebhook(bad, headers, body, now), `secret ${bad}`);
    }
    const withHeader = (name, value) => ({ ...headers, [name]: value });
    await refused(verifyWebhook(secret, withHeader("Webhook-Timestamp", "16142653e1"), body, now), "stamp");
    await refused(verifyWebhook(secret, withHeader("Webhook-Signature", "v1,!!!"), body, now), "sig");
    await refused(verifyWebhook(secret, withHeader("Webhook-Signature", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="), body, now), "version");
    await refused(verifyWebhook(secret, withHeader("Webhook-Signature", ["v1,bm9ldGhlcg=="]), body, now), "array");
    await refused(verifyWebhook(secret, null, body, now), "null headers");
    await refused(verifyWebhook(secret, headers, undefined, now), "no body");
    // Repeated header lines, as a Headers joins them, still verify.
    const joined = new Headers(headers);
    joined.set("webhook-signature", "v1,bm9ldGhlcg==");
    joined.append("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert.deepEqual(await verifyWebhook(secret, joined, body, now), { test: 2432232314 });
  });
});

describe("without a server", () => {
  it("declares the answer types of docs/openapi.json exactly", async (t) => {
    const spec = fileURLToPath(new URL("../../../docs/openapi.json", import.meta.url));
    if (!existsSync(spec)) return t.skip("docs/openapi.json is not beside this checkout");
    const { default: ts } = await import("typescript");
    const schemas = JSON.parse(readFileSync(spec, "utf8")).components.schemas;
    // Client type ↔ server schema; fields that must be string-literal unions.
    const pairs = {
      MintResult: ["MintOut", ["delivery"]],
      ResendResult: ["ResendOut", ["delivery"]],
      VerifyResult: ["VerifyOut", []],
      Claimed: ["ClaimedOut", ["verified_via"]],
      OtpStatus: ["StatusOut", ["status", "verified_via"]],
      DeliveryStatus: ["DeliveryOut", ["mode", "status"]],
      HostedSession: ["HostedOut", []],
      HostedStatus: ["HostedStatusOut", ["status"]],
      TestMessage: ["TestMessageOut", []],
      Webhook: ["WebhookOut", []],
    };
    const dts = fileURLToPath(new URL("../dist/index.d.ts", import.meta.url));
    const program = ts.createProgram([dts], {
      strict: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
      types: [],
      noEmit: true,
    });
    const checker = program.getTypeChecker();
    const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(dts)));
    const flatten = (schema) => {
      if (schema.$ref) return flatten(schemas[schema.$ref.split("/").pop()]);
      const out = { properties: { ...(schema.properties ?? {}) }, required: [...(schema.required ?? [])] };
      for (const part of schema.allOf ?? []) {
        const p = flatten(part);
        Object.assign(out.properties, p.properties);
        out.required.push(...p.required);
      }
      return out;
    };
    const refName = (schema) => {
      const name = schema.$ref.split("/").pop();
      return Object.keys(pairs).find((k) => pairs[k][0] === name) ?? `unmapped ${name}`;
    };
    for (const [name, [schemaName, enums]] of Object.entries(pairs)) {
      const schema = flatten(schemas[schemaName]);
      const type = checker.getDeclaredTypeOfSymbol(exported.find((e) => e.name === name));
      const props = checker.getPropertiesOfType(type);
      assert.deepEqual(props.map((p) => p.name).sort(), Object.keys(schema.properties).sort(), name);
      for (const p of props) {
        const where = `${name}.${p.name}`;
        const field = schema.properties[p.name];
        const t = checker.getTypeOfSymbol(p);
        const parts = (t.isUnion() ? t.types : [t]).filter((x) => !(x.flags & ts.TypeFlags.Undefined));
        const kinds = new Set();
        const literals = [];
        const items = [];
        for (const x of parts) {
          if (checker.isArrayType(x)) {
            // A list: its items' closed set is the document's `items.enum`.
            kinds.add("array");
            const item = checker.getTypeArguments(x)[0];
            for (const y of item.isUnion() ? item.types : [item]) items.push(y.value);
          } else if (x.flags & ts.TypeFlags.Null) kinds.add("null");
          else if (x.flags & ts.TypeFlags.StringLiteral) (kinds.add("string"), literals.push(x.value));
          else if (x.flags & ts.TypeFlags.String) kinds.add("string");
          else if (x.flags & ts.TypeFlags.Number) kinds.add("number");
          else if (x.flags & ts.TypeFlags.BooleanLiteral) kinds.add("boolean");
          else kinds.add(checker.typeToString(x));
        }
        const types = field.$ref ? [refName(field)] : [field.type].flat();
        const expected = new Set(types.map((x) => (x === "integer" ? "number" : x)));
        assert.deepEqual([...kinds].sort(), [...expected].sort(), where);
        if (kinds.has("array")) {
          assert.deepEqual(items.sort(), [...(field.items.enum ?? [])].sort(), `${where} items`);
        }
        const optional = (p.flags & ts.SymbolFlags.Optional) !== 0;
        assert.equal(optional, !schema.required.includes(p.name), `${where} optional`);
        if (enums.includes(p.name) || literals.length) {
          assert.ok(enums.includes(p.name), `${where} is a literal union: list it here`);
          // The document's enum (null aside), and the values its description names.
          const named = [...field.description.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);
          assert.deepEqual(literals.sort(), [...new Set(named)].sort(), where);
          if (field.enum) {
            const values = field.enum.filter((v) => v !== null);
            assert.deepEqual(literals.sort(), [...values].sort(), `${where} enum`);
          }
        }
      }
    }
  });

  it("never follows a redirect: it is an OtpmintError, and the key goes nowhere else", async () => {
    const elsewhere = await serve((_req, res) => res.end("{}"));
    const server = await serve((req, res) => {
      res.writeHead(req.url.includes("see-other") ? 303 : 307, {
        location: `${elsewhere.url}/v1/otp`,
      });
      res.end("moved");
    });
    try {
      const client = new Client(server.url, "sk_test_secret");
      await rejectsWith(client.mint({ email: "ada@example.com" }), (e) => {
        assert.equal(e.status, 307);
        assert.equal(e.code, "");
        assert.match(e.detail, /redirect to http:\/\/127\.0\.0\.1:\d+\/v1\/otp, not followed/);
      });
      await rejectsWith(client.status("see-other"), (e) => assert.equal(e.status, 303));
      assert.equal(server.requests.length, 2);
      assert.equal(server.requests[0].headers.authorization, "Bearer sk_test_secret");
      assert.equal(elsewhere.requests.length, 0);
    } finally {
      await elsewhere.close();
      await server.close();
    }
  });

  it("resolves only the documented success: its status with a JSON object", async () => {
    const answers = [
      // a proxy's page with 200
      () => new Response("<html>hello</html>", { status: 200, headers: { "content-type": "text/html" } }),
      // JSON, but not an object
      () => json(["otp_x"], 201),
      () => json("otp_x", 201),
      // an object, but not JSON by its media type
      () => new Response(JSON.stringify(MINTED), { status: 201, headers: { "content-type": "text/plain" } }),
      // not JSON at all, with a JSON media type
      () => new Response("{", { status: 201, headers: { "content-type": "application/json" } }),
      // empty
      () => new Response(null, { status: 201 }),
      // the right body under a status the route never answers
      () => json(MINTED, 200),
    ];
    for (const [i, answer] of answers.entries()) {
      const { fetch } = fakeFetch(answer);
      await rejectsWith(new Client("http://otp.test", "sk", { fetch }).mint({ email: "a@b.example" }), (e) => {
        assert.equal(e.status, i === 0 || i === answers.length - 1 ? 200 : 201, e.message);
        assert.equal(e.code, "");
        // The body when it is a JSON object (of the wrong status), else nothing.
        assert.deepEqual(e.body, i === answers.length - 1 ? MINTED : {});
        assert.match(e.detail, /^not the answer expected/);
      });
    }
    assert.match((await rejectsOf(answers[0])).detail, /text\/html\): <html>hello<\/html>$/);
    // A cancel answers 204 and nothing else.
    const { fetch } = fakeFetch(() => json({}, 200));
    await rejectsWith(new Client("http://otp.test", "sk", { fetch }).cancel("otp_x"), (e) =>
      assert.equal(e.status, 200),
    );
    // What succeeds: 201 and 202 for a mint, 204 for a cancel.
    for (const status of [201, 202]) {
      const ok = fakeFetch(() => json(MINTED, status));
      assert.deepEqual(await new Client("http://otp.test", "sk", ok).mint({ email: "a@b.example" }), MINTED);
    }
    const none = fakeFetch(() => new Response(null, { status: 204 }));
    assert.equal(await new Client("http://otp.test", "sk", none).cancel("otp_x"), undefined);

    async function rejectsOf(answer) {
      const { fetch } = fakeFetch(answer);
      try {
        await new Client("http://otp.test", "sk", { fetch }).mint({ email: "a@b.example" });
      } catch (e) {
        return e;
      }
      assert.fail("resolved");
    }
  });

  it("keeps the text of any error body, and reads Retry-After as seconds or a date", async () => {
    const cases = [
      [json("just a string", 502), "", '"just a string"'],
      [json(["a", "b"], 503), "", '["a","b"]'],
      [new Response("Bad Gateway from nginx", { status: 502, headers: { "content-type": "text/plain" } }), "", "Bad Gateway from nginx"],
      [json({ error: "not a problem" }, 500), "", '{"error":"not a problem"}'],
      [json({ code: "rate_limited", detail: "Slow down.", limit: "ip" }, 429), "rate_limited", "Slow down."],
    ];
    for (const [answer, code, detail] of cases) {
      const { fetch } = fakeFetch(() => answer);
      await rejectsWith(new Client("http://otp.test", "sk", { fetch }).status("otp_x"), (e) => {
        assert.equal(e.status, answer.status);
        assert.equal(e.code, code);
        assert.equal(e.detail, detail);
        assert.ok(e.message.includes(detail), e.message);
      });
    }
    const retry = async (value) => {
      const { fetch } = fakeFetch(() => json({ code: "rate_limited", detail: "d" }, 429, { "retry-after": value }));
      try {
        await new Client("http://otp.test", "sk", { fetch }).mint({ email: "a@b.example" });
      } catch (e) {
        assert.ok(e instanceof OtpmintError);
        return e.retryAfter;
      }
      assert.fail("resolved");
    };
    assert.equal(await retry("17"), 17);
    assert.equal(await retry("0"), 0);
    const inTwoMinutes = new Date(Date.now() + 120_000);
    const imf = inTwoMinutes.toUTCString(); // "Wed, 26 Nov 2026 08:00:00 GMT"
    const seconds = await retry(imf);
    assert.ok(seconds >= 115 && seconds <= 120, `${imf}: ${seconds}`);
    // The obsolete RFC 850 and asctime forms too.
    const [, dd, mon, yyyy, hms] = /^\w+, (\d\d) (\w+) (\d{4}) (\S+) GMT$/.exec(imf);
    const rfc850 = `Wednesday, ${dd}-${mon}-${yyyy.slice(2)} ${hms} GMT`;
    assert.ok((await retry(rfc850)) >= 115, rfc850);
    const asctime = `Wed ${mon} ${String(Number(dd)).padStart(2, " ")} ${hms} ${yyyy}`;
    assert.ok((await retry(asctime)) >= 115, asctime);
    // A date in the past is now, never negative; nonsense is none.
    assert.equal(await retry("Sun, 06 Nov 1994 08:49:37 GMT"), 0);
    assert.equal(await retry("soon"), undefined);
    assert.equal(await retry("-5"), undefined);
  });

  it("keeps the answer's X-Request-Id, and reads the whole test inbox without `to`", async () => {
    const { fetch, calls } = fakeFetch((url) =>
      url.includes("test-inbox")
        ? json({ messages: [] })
        : json({ code: "rate_limited", detail: "Slow down." }, 429, { "x-request-id": "req-42" }),
    );
    const client = new Client("http://otp.test", "sk", { fetch });
    await rejectsWith(client.status("otp_x"), (e) => {
      assert.equal(e.requestId, "req-42");
      assert.equal(e.code, "rate_limited");
    });
    assert.deepEqual(await client.testInbox(), []);
    assert.deepEqual(await client.testInbox("a+b@c.example"), []);
    assert.deepEqual(
      calls.slice(1).map((c) => new URL(c.url).pathname + new URL(c.url).search),
      ["/v1/tenant/test-inbox", "/v1/tenant/test-inbox?to=a%2Bb%40c.example"],
    );
  });

  it("trims a key read from a file, and refuses a bad one without repeating it", async () => {
    const seen = [];
    const fetch = async (url, init) => {
      seen.push(init.headers.authorization);
      return new Response(JSON.stringify({ messages: [] }), {
        status: 200,
        headers: { "content-type": "application/json" },
      });
    };
    await new Client("http://otp.test", " sk_test_secret\r\n", { fetch }).testInbox();
    assert.deepEqual(seen, ["Bearer sk_test_secret"]);
    for (const bad of ["", " \n", "sk_test_se\ncret", "sk_test_séc", "sk test"]) {
      assert.throws(
        () => new Client("http://otp.test", bad, { fetch }),
        (e) => e instanceof TypeError && !String(e).includes("sk_test"),
        JSON.stringify(bad),
      );
    }
  });

  it("gives up after its timeout with a TimeoutError", async () => {
    const silent = await serve(() => {}); // never answers
    try {
      assert.throws(() => new Client(silent.url, "sk", { timeout: 0 }), RangeError);
      assert.equal(new Client(silent.url, "sk").timeout, 15000);
      assert.equal(new Client(silent.url, "sk", { timeout: Infinity }).timeout, Infinity);
      const client = new Client(silent.url, "sk", { timeout: 199.5 });
      const started = Date.now();
      await assert.rejects(client.status("otp_x"), (e) => {
        assert.equal(e.name, "TimeoutError", String(e));
        return true;
      });
      assert.ok(Date.now() - started < 5000);
    } finally {
      await silent.close();
    }
  });

  it("answers the keys '.' and '..' as the server does, never asking another route", async () => {
    const { fetch, calls } = fakeFetch(() =>
      json({ code: "otp_not_found", detail: "No such code." }, 404),
    );
    const client = new Client("http://otp.test/", "sk", { fetch });
    // URL parsing removes dot segments, %2E-encoded ones too: they can never reach the server.
    assert.equal(new URL("http://otp.test/v1/otp/%2E%2E").pathname, "/v1/");
    for (const call of [
      () => client.status(".."),
      () => client.status("."),
      () => client.cancel(".."),
      () => client.resend(".."),
      () => client.claim(".", "x".repeat(43)),
      // `/v1/otp/` and `/v1/otp/verify` are other routes (404 `not_found`, 405).
      () => client.status(""),
      () => client.status("verify"),
      () => client.cancel("verify"),
      () => client.cancel(""),
    ]) {
      await rejects(call(), 404, "otp_not_found");
    }
    for (const call of [
      () => client.hostedSession(".."),
      () => client.claimHostedSession("."),
      () => client.hostedSession(""),
    ]) {
      await rejects(call(), 404, "session_not_found");
    }
    assert.equal(calls.length, 0);
    // Anything else is one percent-encoded segment.
    for (const key of ["a/b?c#d", "...", "%2E%2E", ".%2e"]) await rejects(client.status(key), 404, "otp_not_found");
    assert.deepEqual(
      calls.map((c) => new URL(c.url).pathname),
      ["/v1/otp/a%2Fb%3Fc%23d", "/v1/otp/...", "/v1/otp/%252E%252E", "/v1/otp/.%252e"],
    );
    assert.ok(calls.every((c) => c.init.redirect === "manual" && c.init.signal instanceof AbortSignal));
  });

  it("refuses a bad idempotency key before any request, and tells a replay", async () => {
    const { fetch, calls } = fakeFetch(() => json(MINTED, 201));
    const client = new Client("http://otp.test", "sk", { fetch });
    for (const bad of ["", "schlüssel", "a b", "ключ", "x".repeat(256), "tab\there", "emoji🙂"]) {
      await assert.rejects(client.mint({ email: "a@b.example", idempotencyKey: bad }), (e) => {
        assert.ok(e instanceof TypeError, String(e));
        assert.match(e.message, /idempotencyKey must be 1–255 visible ASCII characters/);
        return true;
      });
    }
    await assert.rejects(client.mint({ email: "a@b.example", codeChallenge: "x" }), TypeError);
    assert.equal(calls.length, 0);

    const first = await client.mint({ email: "a@b.example", idempotencyKey: "order-42" });
    assert.equal(calls[0].init.headers["idempotency-key"], "order-42");
    assert.equal(wasReplayed(first), false);
    const again = fakeFetch(() => json(MINTED, 201, { "idempotent-replayed": "true" }));
    const replay = await new Client("http://otp.test", "sk", again).mint({
      email: "a@b.example",
      idempotencyKey: "order-42",
    });
    assert.equal(wasReplayed(replay), true);
    // The answer is the server's body, nothing added to it.
    assert.deepEqual(replay, MINTED);
    assert.deepEqual(JSON.parse(JSON.stringify(replay)), MINTED);
    assert.throws(() => wasReplayed({ ...replay }), TypeError);
  });

  it("tells a replayed failure, and names the first field at fault", async () => {
    const problem = (code, status, extra = {}) =>
      json({ type: `/problems/${code}`, code, status, detail: "d", ...extra }, status, {
        "content-type": "application/problem+json",
      });
    // A 502 kept under its idempotency key (API.md §9) says it is a replay.
    const failed = problem("delivery_failed", 502, { reason: "smtp_unreachable" });
    failed.headers.set("idempotent-replayed", "true");
    const replayed = new Client("http://otp.test", "sk", fakeFetch(() => failed));
    await assert.rejects(replayed.mint({ email: "a@b.example", idempotencyKey: "k-1" }), (e) => {
      assert.ok(e instanceof OtpmintError && e.replayed === true, String(e));
      assert.equal(e.body.reason, "smtp_unreachable");
      return true;
    });
    const first = new Client("http://otp.test", "sk", fakeFetch(() => problem("delivery_failed", 502)));
    await assert.rejects(first.mint({ email: "a@b.example", idempotencyKey: "k-1" }), (e) => e.replayed === false);
    // A field error's place and words are in the message, the whole list in `body.errors`.
    const errors = [
      { field: "to", message: "must be an address" },
      { field: "purpose", message: "too long" },
    ];
    const bad = new Client("http://otp.test", "sk", fakeFetch(() => problem("invalid_request", 400, { errors })));
    await assert.rejects(bad.testInbox("x"), (e) => {
      assert.equal(e.message, "400 invalid_request: d (to: must be an address; 1 more in body.errors)");
      assert.deepEqual(e.body.errors, errors);
      return true;
    });
  });
});

describe("against the server", { skip: URL_ ? false : "OTPMINT_URL is not set" }, () => {
  const client = new Client(URL_ ?? "http://127.0.0.1:9", SECRET_KEY);

  it("mints, verifies and claims once", async () => {
    const ada = fresh("ada");
    const minted = await client.mint({ email: ada, purpose: "login" });
    assert.equal(minted.test, true);
    assert.equal(minted.delivery, "test");
    assert.equal(typeof minted.locale, "string");
    const key = minted.shareable_key;
    const code = await codeInInbox(client, ada);
    const wrong = code === "000000" ? "111111" : "000000";
    await assert.rejects(client.verify(key, wrong), (e) => {
      assert.equal(e.code, "otp_mismatch");
      assert.equal(e.body.attempts_remaining, minted.max_attempts - 1);
      return true;
    });
    const verified = await client.verify(key, code);
    assert.equal(verified.verified, true);
    assert.equal(verified.email, ada);
    const status = await client.status(key);
    assert.equal(status.status, "verified");
    assert.equal(status.verified_via, "code");
    assert.equal(status.delivery.status, "test");
    assert.equal(status.email, ada);
    const claimed = await client.claim(key);
    assert.deepEqual([claimed.email, claimed.purpose, claimed.verified_via], [ada, "login", "code"]);
    assert.equal((await client.status(key)).claimed, true);
    await rejects(client.claim(key), 409, "already_claimed");
  });

  it("resends and cancels", async () => {
    const bob = fresh("bob");
    const { shareable_key: key } = await client.mint({ email: bob });
    const resent = await client.resend(key);
    assert.deepEqual([resent.shareable_key, resent.resends, resent.delivery], [key, 1, "test"]);
    assert.equal((await client.status(key)).resends, 1);
    await client.cancel(key);
    assert.equal((await client.status(key)).status, "cancelled");
    await rejects(client.verify(key, await codeInInbox(client, bob, 2)), 410, "otp_cancelled");
  });

  it("claims a link with a PKCE challenge only with its verifier", async () => {
    const cy = fresh("cy");
    const { verifier, challenge } = await pkcePair();
    const { shareable_key: key } = await client.mint({
      email: cy,
      linkReturnUrl: RETURN_URL,
      codeChallenge: challenge,
    });
    await client.verify(key, await codeInInbox(client, cy));
    await rejects(client.claim(key, "x".repeat(43)), 403, "code_verifier_mismatch");
    assert.equal((await client.claim(key, verifier)).email, cy);
  });

  it("starts hosted sessions open, not claimable before they are verified", async () => {
    const session = await client.createHostedSession({ returnUrl: RETURN_URL, purpose: "login" });
    assert.match(session.id, /^hs_/);
    assert.match(session.url, /^http/);
    const status = await client.hostedSession(session.id);
    assert.equal(status.status, "open");
    await rejects(client.claimHostedSession(session.id), 409, "not_verified");
  });

  it("names the problem of a wrong secret key", async () => {
    await rejects(new Client(URL_, "sk_wrong").mint({ email: fresh("ada") }), 401, "unauthorized");
  });

  it("tells an idempotent replay from the first answer, and asks about a key '..'", async () => {
    const dee = fresh("dee");
    const idempotencyKey = `client-test-${randomBytes(8).toString("hex")}`;
    const first = await client.mint({ email: dee, idempotencyKey });
    const again = await client.mint({ email: dee, idempotencyKey });
    assert.deepEqual([wasReplayed(first), wasReplayed(again)], [false, true]);
    assert.deepEqual(again, first);
    await codeInInbox(client, dee, 1); // the repeat sent nothing
    // The whole inbox (no `to`) holds it too.
    assert.ok((await client.testInbox()).some((m) => m.to === dee));
    await rejects(client.status(".."), 404, "otp_not_found");
    await rejects(client.status("."), 404, "otp_not_found");
    await rejects(client.cancel(".."), 404, "otp_not_found");
  });

  if (LOOPBACK_WEBHOOKS) {
    it("verifies the signature of a webhook the server sent", async () => {
      const receiver = await serve((_req, res) => res.writeHead(204).end());
      try {
        const url = `${receiver.url}/hooks/otp`;
        const first = await client.setWebhook({ url, events: ["otp.verified"] });
        assert.match(first.secret ?? "", /^whsec_/);
        assert.deepEqual([first.url, first.events], [url, ["otp.verified"]]);
        // Stored again: the same secret, not shown; a rotation shows a new one.
        const again = await client.setWebhook({ url, events: ["otp.verified", "otp.sent"] });
        assert.equal(again.secret ?? null, null);
        const hook = await client.rotateWebhookSecret();
        assert.match(hook.secret ?? "", /^whsec_/);
        assert.notEqual(hook.secret, first.secret);
        const eve = fresh("eve");
        const { shareable_key: key } = await client.mint({ email: eve });
        await client.verify(key, await codeInInbox(client, eve));
        let event;
        for (let i = 0; i < 150 && !event; i++) {
          for (const req of receiver.requests) {
            const e = await verifyWebhook(hook.secret, req.headers, req.body);
            if (e.type === "otp.verified" && e.data.shareable_key === key) event = e;
          }
          if (!event) await new Promise((done) => setTimeout(done, 200));
        }
        assert.ok(event, JSON.stringify(receiver.requests));
        assert.equal(event.data.email, eve);
        const signed = receiver.requests.find((q) => q.body.includes(key));
        await assert.rejects(
          verifyWebhook(hook.secret, signed.headers, signed.body.replace(key, "otp_other")),
          WebhookVerificationError,
        );
        await client.deleteWebhook();
        await rejects(client.deleteWebhook(), 404, "webhook_not_found");
      } finally {
        await client.deleteWebhook().catch(() => {});
        await receiver.close();
      }
    });
  }
});
