// A small typed client for otpmint's tenant API (API.md §18.6). ESM; no runtime dependency
// beyond the platform's `fetch` and Web Crypto (Node 20+, Deno, Bun, browsers).
//
//   import { Client } from "otpmint";
//   const otp = new Client("https://otp.example.com", "sk_…");
//   const { shareable_key } = await otp.mint({ email: "ada@example.com", purpose: "login" });
//   await otp.verify(shareable_key, "042917"); // throws OtpmintError unless verified

export interface MintRequest {
  email?: string;
  phone?: string;
  purpose?: string;
  locale?: string;
  delivery?: "sync" | "async";
  /** A magic link beside the code, leading back to this URL (one of the tenant's allowed). */
  linkReturnUrl?: string;
  /** With `linkReturnUrl`: the S256 challenge of a PKCE verifier (see `pkcePair`). */
  codeChallenge?: string;
  /** Repeats with the same key answer as the first request did (24 h). */
  idempotencyKey?: string;
}

export interface MintResult {
  shareable_key: string;
  expires_at: string;
  ttl_seconds: number;
  code_length: number;
  max_attempts: number;
  test?: boolean;
  locale?: string;
  delivery?: Record<string, unknown>;
}

export interface VerifyResult {
  verified: true;
  email?: string;
  phone?: string;
  purpose: string;
  verified_at: string;
}

export interface OtpStatus {
  status: "pending" | "verified" | "expired" | "exhausted" | "superseded" | "cancelled" | "failed";
  purpose: string;
  created_at: string;
  expires_at: string;
  attempts_used: number;
  attempts_remaining: number;
  verified_at?: string | null;
  resends?: number;
  [field: string]: unknown;
}

export interface Claimed {
  email?: string;
  phone?: string;
  purpose: string;
  verified_at: string;
  verified_via: string;
}

export interface HostedSessionRequest {
  returnUrl: string;
  purpose?: string;
  email?: string;
  locale?: string;
  codeChallenge?: string;
}

export interface HostedSession {
  id: string;
  url: string;
  expires_at: string;
}

export interface HostedStatus {
  status: "open" | "verified" | "failed" | "expired";
  email?: string | null;
  verified_at?: string | null;
  [field: string]: unknown;
}

export interface TestMessage {
  to: string;
  subject: string;
  text: string;
  html?: string;
  received_at: string;
}

/** An answer other than the one asked for: its status, the problem's `code` and `detail`,
 * and the whole body (`attempts_remaining`, `limit`, `reason`, …). */
export class OtpmintError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly body: Record<string, unknown>,
    /** `Retry-After` in seconds, when the answer has one. */
    readonly retryAfter?: number,
  ) {
    super(`${status} ${code}: ${detail}`);
    this.name = "OtpmintError";
  }
}

export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

/** The tenant API with one secret key. Every method rejects with `OtpmintError` on an
 * answer other than its success status (and with fetch's error when there is no answer). */
export class Client {
  readonly baseUrl: string;
  readonly #secretKey: string;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string, secretKey: string, options: { fetch?: typeof fetch } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#secretKey = secretKey;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  async #request<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<T> {
    const h: Record<string, string> = {
      authorization: `Bearer ${this.#secretKey}`,
      accept: "application/json",
      ...headers,
    };
    if (body !== undefined) h["content-type"] = "application/json";
    const r = await this.#fetch(this.baseUrl + path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { detail: text };
      }
    }
    if (!r.ok) {
      const problem = (parsed ?? {}) as Record<string, unknown>;
      const retry = r.headers.get("retry-after");
      throw new OtpmintError(
        r.status,
        String(problem.code ?? ""),
        String(problem.detail ?? ""),
        problem,
        retry && /^\d+$/.test(retry) ? Number(retry) : undefined,
      );
    }
    return parsed as T;
  }

  /** Mint a code and send it (`POST /v1/otp`): 201 sent, 202 queued (async). */
  mint(req: MintRequest): Promise<MintResult> {
    const body: Record<string, unknown> = {};
    for (const k of ["email", "phone", "purpose", "locale", "delivery"] as const) {
      if (req[k] !== undefined) body[k] = req[k];
    }
    if (req.codeChallenge !== undefined && req.linkReturnUrl === undefined) {
      throw new TypeError("codeChallenge binds a magic link: give linkReturnUrl too");
    }
    if (req.linkReturnUrl !== undefined) {
      body.link = {
        return_url: req.linkReturnUrl,
        ...(req.codeChallenge !== undefined ? { code_challenge: req.codeChallenge } : {}),
      };
    }
    const headers: Record<string, string> = req.idempotencyKey
      ? { "idempotency-key": req.idempotencyKey }
      : {};
    return this.#request("POST", "/v1/otp", body, headers);
  }

  /** Check a code (`POST /v1/otp/verify`). A wrong code rejects with 422 `otp_mismatch`
   * (`body.attempts_remaining`); a key that can never verify, with 410. */
  verify(shareableKey: string, otp: string): Promise<VerifyResult> {
    return this.#request("POST", "/v1/otp/verify", { shareable_key: shareableKey, otp });
  }

  /** The key's status (`GET /v1/otp/{key}`). */
  status(shareableKey: string): Promise<OtpStatus> {
    return this.#request("GET", `/v1/otp/${seg(shareableKey)}`);
  }

  /** Cancel a pending code (`DELETE /v1/otp/{key}`). */
  async cancel(shareableKey: string): Promise<void> {
    await this.#request("DELETE", `/v1/otp/${seg(shareableKey)}`);
  }

  /** Send a new code under the same key (`POST /v1/otp/{key}/resend`). */
  resend(shareableKey: string): Promise<Record<string, unknown>> {
    return this.#request("POST", `/v1/otp/${seg(shareableKey)}/resend`, {});
  }

  /** Redeem a verified key's outcome once (`POST /v1/otp/{key}/claim`). */
  claim(shareableKey: string, codeVerifier?: string): Promise<Claimed> {
    const body = codeVerifier === undefined ? {} : { code_verifier: codeVerifier };
    return this.#request("POST", `/v1/otp/${seg(shareableKey)}/claim`, body);
  }

  /** Start a hosted verification (`POST /v1/tenant/hosted-sessions`); send the person to
   * the answer's `url`. */
  createHostedSession(req: HostedSessionRequest): Promise<HostedSession> {
    const body: Record<string, unknown> = { return_url: req.returnUrl };
    if (req.purpose !== undefined) body.purpose = req.purpose;
    if (req.email !== undefined) body.email = req.email;
    if (req.locale !== undefined) body.locale = req.locale;
    if (req.codeChallenge !== undefined) body.code_challenge = req.codeChallenge;
    return this.#request("POST", "/v1/tenant/hosted-sessions", body);
  }

  /** A hosted session's status (`GET /v1/tenant/hosted-sessions/{id}`). */
  hostedSession(id: string): Promise<HostedStatus> {
    return this.#request("GET", `/v1/tenant/hosted-sessions/${seg(id)}`);
  }

  /** Redeem a verified hosted session once (`POST …/hosted-sessions/{id}/claim`). */
  claimHostedSession(id: string, codeVerifier?: string): Promise<Claimed> {
    const body = codeVerifier === undefined ? {} : { code_verifier: codeVerifier };
    return this.#request("POST", `/v1/tenant/hosted-sessions/${seg(id)}/claim`, body);
  }

  /** Messages a test tenant or test recipient received (`GET /v1/tenant/test-inbox`). */
  async testInbox(to: string): Promise<TestMessage[]> {
    const v = await this.#request<{ messages: TestMessage[] }>(
      "GET",
      `/v1/tenant/test-inbox?to=${encodeURIComponent(to)}`,
    );
    return v.messages;
  }
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** A PKCE verifier (keep it in the browser's session) and its S256 challenge (give it to
 * `mint({ codeChallenge })` or `createHostedSession({ codeChallenge })`). */
export async function pkcePair(): Promise<{ verifier: string; challenge: string }> {
  const raw = crypto.getRandomValues(new Uint8Array(48));
  const url = (b: Uint8Array) =>
    base64(b).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const verifier = url(raw);
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)),
  );
  return { verifier, challenge: url(digest) };
}

/** Check a webhook's Standard Webhooks signature and return its event. `secret` is the
 * endpoint's `whsec_…`; `headers` the request's; `body` its raw text, before any JSON
 * parsing. Rejects with `WebhookVerificationError`. */
export async function verifyWebhook<T = unknown>(
  secret: string,
  headers: { get(name: string): string | null } | Record<string, string | string[] | undefined>,
  body: string,
  options: { toleranceSeconds?: number; now?: number } = {},
): Promise<T> {
  const get = (name: string): string | null => {
    // A Headers of any fetch implementation, or a plain object (Node's IncomingHttpHeaders).
    if (typeof (headers as { get?: unknown }).get === "function") {
      return (headers as { get(n: string): string | null }).get(name);
    }
    const plain = headers as Record<string, string | string[] | undefined>;
    const hit = Object.keys(plain).find((k) => k.toLowerCase() === name);
    const value = hit === undefined ? undefined : plain[hit];
    return Array.isArray(value) ? value.join(" ") : (value ?? null);
  };
  const id = get("webhook-id");
  const stamp = get("webhook-timestamp");
  const signatures = get("webhook-signature");
  if (!id || !stamp || !signatures) {
    throw new WebhookVerificationError(
      "missing webhook-id, webhook-timestamp or webhook-signature",
    );
  }
  if (!/^\d+$/.test(stamp)) throw new WebhookVerificationError("webhook-timestamp is not a number");
  const now = options.now ?? Date.now() / 1000;
  if (Math.abs(now - Number(stamp)) > (options.toleranceSeconds ?? 300)) {
    throw new WebhookVerificationError("webhook-timestamp is too old or too new");
  }
  if (!secret.startsWith("whsec_")) {
    throw new WebhookVerificationError("the secret is not a whsec_ secret");
  }
  const key = await crypto.subtle.importKey(
    "raw",
    fromBase64(secret.slice("whsec_".length)),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const signed = new TextEncoder().encode(`${id}.${stamp}.${body}`);
  for (const candidate of signatures.split(" ")) {
    const [version, value] = candidate.split(",", 2);
    if (version !== "v1" || !value) continue;
    let mac: Uint8Array;
    try {
      mac = fromBase64(value);
    } catch {
      continue;
    }
    // HMAC verification in constant time (Web Crypto's verify).
    if (await crypto.subtle.verify("HMAC", key, mac, signed)) {
      return JSON.parse(body) as T;
    }
  }
  throw new WebhookVerificationError("no signature matches");
}
