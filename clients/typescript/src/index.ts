// A small typed client for otpmint's tenant API (API.md §18.6). ESM; no runtime dependency
// beyond the platform's `fetch` and Web Crypto (Node 20+, Deno, Bun, browsers).
//
//   import { Client } from "otpmint";
//   const otp = new Client("https://otp.example.com", "sk_…");
//   const { shareable_key } = await otp.mint({ email: "ada@example.com", purpose: "login" });
//   await otp.verify(shareable_key, "042917"); // throws OtpmintError unless verified
//
// The answer types mirror the server's description (docs/openapi.json) field for field:
// `?` where the server may leave a member out, `| null` where it may send null.

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
  /** Repeats with the same key answer as the first request did (24 h); 1–255 visible ASCII
   * characters. `wasReplayed(result)` tells a repeated answer from a first one. */
  idempotencyKey?: string;
}

/** How a mint's message went: `sent` (201, the relay accepted it), `queued` (202, a sender
 * delivers it), `unknown` (201, the relay took it and never answered) or `test` (201, in the
 * tenant's test inbox). */
export type MintDelivery = "sent" | "queued" | "unknown" | "test";

/** `POST /v1/otp` (MintOut). */
export interface MintResult {
  shareable_key: string;
  expires_at: string;
  ttl_seconds: number;
  code_length: number;
  max_attempts: number;
  delivery: MintDelivery;
  /** The locale the message was written in. */
  locale: string;
  /** Present and true for a test mint. */
  test?: boolean;
}

/** `POST /v1/otp/{key}/resend` (ResendOut): a mint's answer with the number of resends. */
export interface ResendResult extends MintResult {
  resends: number;
}

/** Who and what was verified (VerifiedOut). */
export interface VerifiedOutcome {
  /** The address (absent for a text message's code). */
  email?: string | null;
  /** The number of a text message's code. */
  phone?: string | null;
  purpose: string;
  verified_at: string;
}

/** `POST /v1/otp/verify` (VerifyOut). */
export interface VerifyResult extends VerifiedOutcome {
  verified: boolean;
}

/** A claimed outcome (ClaimedOut), of a key or a hosted session. */
export interface Claimed extends VerifiedOutcome {
  verified_via: "code" | "link";
}

export type OtpState =
  | "pending"
  | "verified"
  | "expired"
  | "exhausted"
  | "superseded"
  | "cancelled"
  | "failed";

/** A code's delivery, as `status()` shows it (DeliveryOut). */
export interface DeliveryStatus {
  mode: "sync" | "async";
  status: "queued" | "sending" | "sent" | "failed" | "unknown" | "bounced" | "test";
  /** Delivery attempts made so far. */
  attempts: number;
  /** The last failure (`smtp_unreachable`, `smtp_timeout`, …, `expired`, `not_sent`). */
  reason?: string | null;
  /** With `reason`: what to check. */
  detail?: string | null;
  /** The provider's own error code of the last failure. */
  detail_code?: string | null;
  /** `smtp`, `smtp_fallback`, `http` or `provider:<kind>`: the transport that took it. */
  transport?: string | null;
  provider_message_id?: string | null;
  sent_at?: string | null;
}

/** `GET /v1/otp/{key}` (StatusOut). */
export interface OtpStatus {
  status: OtpState;
  purpose: string;
  created_at: string;
  expires_at: string;
  attempts_used: number;
  attempts_remaining: number;
  verified_at?: string | null;
  delivery: DeliveryStatus;
  /** New codes sent under this key since its mint. */
  resends: number;
  /** Present and true for a test code. */
  test?: boolean;
  /** Once verified: by the code or by the magic link. */
  verified_via?: "code" | "link" | null;
  /** The address (an email code), until the outcome is claimed. */
  email?: string | null;
  /** The number (a text-message code), until the outcome is claimed. */
  phone?: string | null;
  /** Present and true once the outcome was claimed. */
  claimed?: boolean;
}

export interface HostedSessionRequest {
  returnUrl: string;
  purpose?: string;
  email?: string;
  locale?: string;
  codeChallenge?: string;
}

/** `POST /v1/tenant/hosted-sessions` (HostedOut). */
export interface HostedSession {
  id: string;
  /** Where to send the person. */
  url: string;
  expires_at: string;
}

/** `GET /v1/tenant/hosted-sessions/{id}` (HostedStatusOut). */
export interface HostedStatus {
  status: "open" | "verified" | "failed" | "expired";
  /** The address (given, or typed on the page), once known. */
  email?: string | null;
  verified_at?: string | null;
}

/** One message of a test inbox (TestMessageOut). */
export interface TestMessage {
  to: string;
  subject: string;
  text: string;
  html?: string | null;
  received_at: string;
}

/** The events a webhook may subscribe to (API.md §9, §16, §13). */
export type WebhookEvent =
  | "otp.sent"
  | "otp.delivery_failed"
  | "otp.verified"
  | "otp.attempts_exhausted"
  | "otp.cancelled"
  | "otp.blocked"
  | "otp.bounced"
  | "otp.complained"
  | "test_recipient.disabled";

/** The tenant's webhook (WebhookOut). `secret` (`whsec_…`, for `verifyWebhook`) is there
 * only in the answer that created the webhook and in a rotation's. */
export interface Webhook {
  url: string;
  events: WebhookEvent[];
  secret?: string | null;
  created_at: string;
  updated_at: string;
  /** Set when the endpoint answered 410 Gone: no events are sent until `setWebhook` again. */
  disabled_at?: string | null;
  disabled_reason?: string | null;
}

export interface ClientOptions {
  /** A `fetch` to use instead of the platform's (it is given `redirect: "manual"` and an
   * `AbortSignal`). */
  fetch?: typeof fetch;
  /** Milliseconds a request may take, answer body included (default 15000; `Infinity` for
   * no limit). Past it the call rejects with a `DOMException` named `"TimeoutError"`. */
  timeout?: number;
}

/** An answer other than the one asked for: its status, the problem's `code` and `detail`,
 * and the whole body (`attempts_remaining`, `limit`, `reason`, …).
 *
 * For an answer that is not a problem document (a proxy's page, a redirect, a success
 * answer without the JSON it should have) `code` is `""`, `body` is the answer's JSON
 * object when it has one (else `{}`) and `detail` holds the answer's text (or says what
 * was wrong with it). */
export class OtpmintError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly body: Record<string, unknown>,
    /** `Retry-After` in seconds from now (never negative), when the answer has one — as a
     * number of seconds or as an HTTP date. */
    readonly retryAfter?: number,
    /** The answer's `X-Request-Id` (what otpmint's log lines name the request by), when it
     * has one. */
    readonly requestId?: string,
    /** `true` when the answer is the stored one for a repeated `idempotencyKey`
     * (`Idempotent-Replayed: true`, API.md §9): a 502 is kept 24 hours under its key, so
     * once the relay is mended, mint again under a new key. */
    readonly replayed: boolean = false,
  ) {
    super(`${status} ${code ? `${code}: ` : ""}${detail}${firstError(body)}`);
    this.name = "OtpmintError";
  }
}

/** ` (field: message)` for a problem's first field error (`errors`, API.md §1), else `""`. */
function firstError(body: Record<string, unknown>): string {
  const errors = body.errors;
  if (!Array.isArray(errors) || errors.length === 0 || !isObject(errors[0])) return "";
  const { field, message } = errors[0];
  if (typeof field !== "string" || typeof message !== "string") return "";
  const more = errors.length > 1 ? `; ${errors.length - 1} more in body.errors` : "";
  return ` (${field}: ${message}${more})`;
}

export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

const DEFAULT_TIMEOUT_MS = 15_000;

/** Whether a mint's answer was a replay (`Idempotent-Replayed: true`), per answer object. */
const replays = new WeakMap<object, boolean>();

/** Whether `result` — the object `Client.mint` resolved to — repeats the answer to an earlier
 * request with the same `idempotencyKey` (the server sent `Idempotent-Replayed: true`, API.md
 * §9: nothing was sent or counted this time). `false` for a first answer. Throws a
 * `TypeError` for any other object (a copy of the answer included). */
export function wasReplayed(result: MintResult): boolean {
  const replayed = typeof result === "object" && result !== null ? replays.get(result) : undefined;
  if (replayed === undefined) {
    throw new TypeError("wasReplayed() takes the object mint() resolved to (not a copy)");
  }
  return replayed;
}

/** The tenant API with one secret key. Every method rejects with `OtpmintError` on any answer
 * but its route's documented success (status and JSON body) — a redirect included: redirects
 * are never followed, so the secret key goes to `baseUrl` only. Without an answer it rejects
 * with fetch's error (a `TypeError` when the server cannot be reached), or with a
 * `DOMException` named `"TimeoutError"` after `timeout` milliseconds. */
export class Client {
  readonly baseUrl: string;
  readonly timeout: number;
  readonly #secretKey: string;
  readonly #fetch: typeof fetch;

  /** `secretKey` is taken without the white space around it (a key read from a file ends
   * with a line break); one holding another character a header cannot carry is a
   * `TypeError` here, which never repeats it. */
  constructor(baseUrl: string, secretKey: string, options: ClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    const key = typeof secretKey === "string" ? secretKey.trim() : "";
    if (!/^[!-~]+$/.test(key)) {
      throw new TypeError(
        "secretKey must be the tenant's secret key (sk_…): visible ASCII characters, no line break or space inside",
      );
    }
    this.#secretKey = key;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    if (typeof timeout !== "number" || Number.isNaN(timeout) || timeout <= 0) {
      throw new RangeError("timeout is a positive number of milliseconds (or Infinity)");
    }
    this.timeout = timeout;
  }

  /** One request; resolves to the answer when its status is one of `ok` (and, unless it is
   * 204, its body a JSON object), else rejects with `OtpmintError`. */
  async #request(
    method: string,
    path: string,
    ok: readonly number[],
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ value: unknown; headers: Headers }> {
    const h: Record<string, string> = {
      authorization: `Bearer ${this.#secretKey}`,
      accept: "application/json",
      ...headers,
    };
    if (body !== undefined) h["content-type"] = "application/json";
    const init: RequestInit = {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      // Never to another URL: a redirect is an answer like any other (an error here).
      redirect: "manual",
    };
    // Whole milliseconds; from 2^31 - 1 (about 24.8 days) on, timers cannot count: no limit.
    const ms = Math.ceil(this.timeout);
    if (ms < 2 ** 31 - 1) init.signal = AbortSignal.timeout(ms);
    const r = await this.#fetch(this.baseUrl + path, init);
    const text = await r.text();
    if (!ok.includes(r.status) || r.type === "opaqueredirect") throw failure(r, text);
    if (r.status === 204) return { value: undefined, headers: r.headers };
    const value = isJson(r.headers.get("content-type")) ? parseJson(text) : undefined;
    if (!isObject(value)) throw failure(r, text);
    return { value, headers: r.headers };
  }

  /** Mint a code and send it (`POST /v1/otp`): 201 sent, 202 queued (async). */
  async mint(req: MintRequest): Promise<MintResult> {
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
    const headers: Record<string, string> = {};
    if (req.idempotencyKey !== undefined) {
      if (typeof req.idempotencyKey !== "string" || !/^[!-~]{1,255}$/.test(req.idempotencyKey)) {
        throw new TypeError(
          "idempotencyKey must be 1–255 visible ASCII characters (! to ~, no spaces)",
        );
      }
      headers["idempotency-key"] = req.idempotencyKey;
    }
    const r = await this.#request("POST", "/v1/otp", [201, 202], body, headers);
    const result = r.value as MintResult;
    replays.set(result, r.headers.get("idempotent-replayed")?.trim().toLowerCase() === "true");
    return result;
  }

  /** Check a code (`POST /v1/otp/verify`). A wrong code rejects with 422 `otp_mismatch`
   * (`body.attempts_remaining`); a key that can never verify, with 410. */
  async verify(shareableKey: string, otp: string): Promise<VerifyResult> {
    const body = { shareable_key: shareableKey, otp };
    return (await this.#request("POST", "/v1/otp/verify", [200], body)).value as VerifyResult;
  }

  /** The key's status (`GET /v1/otp/{key}`). */
  async status(shareableKey: string): Promise<OtpStatus> {
    return (await this.#request("GET", otpPath(shareableKey), [200])).value as OtpStatus;
  }

  /** Cancel a pending code (`DELETE /v1/otp/{key}`, 204). */
  async cancel(shareableKey: string): Promise<void> {
    await this.#request("DELETE", otpPath(shareableKey), [204]);
  }

  /** Send a new code under the same key (`POST /v1/otp/{key}/resend`): 201, 202 queued.
   * While the key's last message is still queued or being sent the answer is 409 `conflict`
   * (try again once it was delivered or failed); over `otp.max_resends`, 429
   * `resend_limit_reached`; a key no longer pending, 410 with its state's code. */
  async resend(shareableKey: string): Promise<ResendResult> {
    const path = `${otpPath(shareableKey)}/resend`;
    return (await this.#request("POST", path, [201, 202], {})).value as ResendResult;
  }

  /** Redeem a verified key's outcome once (`POST /v1/otp/{key}/claim`). */
  async claim(shareableKey: string, codeVerifier?: string): Promise<Claimed> {
    const body = codeVerifier === undefined ? {} : { code_verifier: codeVerifier };
    const path = `${otpPath(shareableKey)}/claim`;
    return (await this.#request("POST", path, [200], body)).value as Claimed;
  }

  /** Start a hosted verification (`POST /v1/tenant/hosted-sessions`); send the person to
   * the answer's `url`. */
  async createHostedSession(req: HostedSessionRequest): Promise<HostedSession> {
    const body: Record<string, unknown> = { return_url: req.returnUrl };
    if (req.purpose !== undefined) body.purpose = req.purpose;
    if (req.email !== undefined) body.email = req.email;
    if (req.locale !== undefined) body.locale = req.locale;
    if (req.codeChallenge !== undefined) body.code_challenge = req.codeChallenge;
    const r = await this.#request("POST", "/v1/tenant/hosted-sessions", [201], body);
    return r.value as HostedSession;
  }

  /** A hosted session's status (`GET /v1/tenant/hosted-sessions/{id}`). */
  async hostedSession(id: string): Promise<HostedStatus> {
    const r = await this.#request("GET", sessionPath(id), [200]);
    return r.value as HostedStatus;
  }

  /** Redeem a verified hosted session once (`POST …/hosted-sessions/{id}/claim`). */
  async claimHostedSession(id: string, codeVerifier?: string): Promise<Claimed> {
    const body = codeVerifier === undefined ? {} : { code_verifier: codeVerifier };
    const path = `${sessionPath(id)}/claim`;
    return (await this.#request("POST", path, [200], body)).value as Claimed;
  }

  /** Messages a test tenant or test recipient received (`GET /v1/tenant/test-inbox`), newest
   * first: those to `to`, or all of them (its last 100). */
  async testInbox(to?: string): Promise<TestMessage[]> {
    const query = to === undefined ? "" : `?to=${encodeURIComponent(to)}`;
    const path = `/v1/tenant/test-inbox${query}`;
    const v = (await this.#request("GET", path, [200])).value as { messages: TestMessage[] };
    return v.messages;
  }

  /** Register the tenant's webhook endpoint, or replace it (`PUT /v1/tenant/webhook`). The
   * answer carries `secret` when this made the webhook (keep it: it is not shown again); a
   * replaced one keeps its secret. */
  async setWebhook(webhook: { url: string; events: WebhookEvent[] }): Promise<Webhook> {
    const body = { url: webhook.url, events: webhook.events };
    return (await this.#request("PUT", "/v1/tenant/webhook", [200], body)).value as Webhook;
  }

  /** A new signing secret for the webhook (`POST /v1/tenant/webhook/rotate-secret`), in
   * the answer's `secret`; 404 `webhook_not_found` without a webhook. */
  async rotateWebhookSecret(): Promise<Webhook> {
    const path = "/v1/tenant/webhook/rotate-secret";
    return (await this.#request("POST", path, [200])).value as Webhook;
  }

  /** Remove the webhook (`DELETE /v1/tenant/webhook`); 404 `webhook_not_found` without one. */
  async deleteWebhook(): Promise<void> {
    await this.#request("DELETE", "/v1/tenant/webhook", [204]);
  }
}

const NOT_FOUND = {
  otp_not_found: ["Code not found", "No such code."],
  session_not_found: ["Session not found", "The tenant has no hosted session with this id."],
} as const;

/** A key or id as a path segment, percent-encoded. Some strings cannot be one: `.` and `..`
 * (URL parsing removes them, `%2E` included), `""` (the path would end in `/`) and, for a
 * code's key, `verify` (`/v1/otp/verify` is the verify route): the request would go to
 * another route. No key or id is any of them, and the server answers a malformed one with
 * 404 (API.md §6.4): that answer, at once. */
function seg(value: string, notFound: keyof typeof NOT_FOUND): string {
  if (
    value === "" ||
    value === "." ||
    value === ".." ||
    (notFound === "otp_not_found" && value === "verify")
  ) {
    const [title, detail] = NOT_FOUND[notFound];
    const body = { type: `/problems/${notFound}`, title, status: 404, code: notFound, detail };
    throw new OtpmintError(404, notFound, detail, body);
  }
  return encodeURIComponent(value);
}

const otpPath = (key: string) => `/v1/otp/${seg(key, "otp_not_found")}`;
const sessionPath = (id: string) => `/v1/tenant/hosted-sessions/${seg(id, "session_not_found")}`;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isJson(contentType: string | null): boolean {
  const media = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return media === "application/json" || /^application\/[^/]+\+json$/.test(media);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The `OtpmintError` for an answer that is not the one asked for. */
function failure(r: Response, text: string): OtpmintError {
  const parsed = isJson(r.headers.get("content-type")) ? parseJson(text) : undefined;
  const problem = isObject(parsed) ? parsed : undefined;
  const code = typeof problem?.code === "string" ? problem.code : "";
  let detail = typeof problem?.detail === "string" ? problem.detail : text;
  if (r.type === "opaqueredirect" || (r.status >= 300 && r.status < 400)) {
    const to = r.headers.get("location");
    detail = `a redirect${to ? ` to ${to}` : ""}, not followed`;
  } else if (r.status >= 200 && r.status < 300) {
    const type = r.headers.get("content-type") || "no content type";
    detail = `not the answer expected (${r.status}, ${type})${text ? `: ${text}` : ""}`;
  } else if (!detail) {
    detail = r.statusText || "no detail";
  }
  return new OtpmintError(
    r.status,
    code,
    detail,
    problem ?? {},
    retryAfterSeconds(r.headers.get("retry-after")),
    r.headers.get("x-request-id") ?? undefined,
    r.headers.get("idempotent-replayed")?.trim().toLowerCase() === "true",
  );
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `Retry-After` as seconds from `now` (never negative): delay-seconds, or an HTTP-date in
 * any of the three forms of RFC 9110 §5.6.7. `undefined` for anything else. */
function retryAfterSeconds(value: string | null, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  let m: RegExpExecArray | null;
  let day: string, month: string, year: number, time: string;
  if ((m = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}:\d{2}:\d{2}) GMT$/.exec(v))) {
    [day, month, year, time] = [m[1], m[2], Number(m[3]), m[4]]; // IMF-fixdate
  } else if ((m = /^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}:\d{2}:\d{2}) GMT$/.exec(v))) {
    // RFC 850: a two-digit year more than 50 years ahead is in the past century.
    const nowYear = new Date(now).getUTCFullYear();
    year = Math.floor(nowYear / 100) * 100 + Number(m[3]);
    if (year > nowYear + 50) year -= 100;
    [day, month, time] = [m[1], m[2], m[4]];
  } else if ((m = /^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}:\d{2}:\d{2}) (\d{4})$/.exec(v))) {
    [month, day, time, year] = [m[1], m[2], m[3], Number(m[4])]; // asctime
  } else {
    return undefined;
  }
  const mon = MONTHS.indexOf(month[0].toUpperCase() + month.slice(1).toLowerCase());
  const [hh, mm, ss] = time.split(":").map(Number);
  if (mon < 0 || hh > 23 || mm > 59 || ss > 60) return undefined;
  const at = Date.UTC(year, mon, Number(day.trim()), hh, mm, ss);
  return Math.max(0, Math.ceil((at - now) / 1000));
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Strict base64 (padded, standard alphabet, no whitespace); `undefined` when it is not. */
function fromBase64(text: string): Uint8Array | undefined {
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) {
    return undefined;
  }
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** A PKCE verifier (keep it in the browser's session) and its S256 challenge (give it to
 * `mint({ codeChallenge })` or `createHostedSession({ codeChallenge })`). Make one pair per
 * flow. */
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
 * endpoint's `whsec_…`; `headers` the request's; `body` its raw body before any JSON
 * parsing: the text, or its bytes (a `Uint8Array`, such as Node's `Buffer`). Rejects with
 * `WebhookVerificationError` — for a bad secret, missing or malformed headers, a stale
 * timestamp, no matching signature or a body that is not JSON (or not UTF-8). */
export async function verifyWebhook<T = unknown>(
  secret: string,
  headers: { get(name: string): string | null } | Record<string, string | string[] | undefined>,
  body: string | Uint8Array,
  options: { toleranceSeconds?: number; now?: number } = {},
): Promise<T> {
  const get = (name: string): string | null => {
    // A Headers of any fetch implementation, or a plain object (Node's IncomingHttpHeaders).
    if (typeof (headers as { get?: unknown }).get === "function") {
      const value = (headers as { get(n: string): unknown }).get(name);
      return typeof value === "string" ? value : null;
    }
    const plain = headers as Record<string, unknown>;
    const hit = Object.keys(plain).find((k) => k.toLowerCase() === name);
    const value = hit === undefined ? undefined : plain[hit];
    if (Array.isArray(value)) return value.join(" ");
    return typeof value === "string" ? value : null;
  };
  if (typeof headers !== "object" || headers === null) {
    throw new WebhookVerificationError("no headers");
  }
  if (typeof body !== "string" && !(body instanceof Uint8Array)) {
    throw new WebhookVerificationError("the body is not a string or bytes");
  }
  // The bytes as sent: a string is encoded as UTF-8, bytes are signed as they are.
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
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
  if (typeof secret !== "string" || !secret.startsWith("whsec_")) {
    throw new WebhookVerificationError("the secret is not a whsec_ secret");
  }
  const raw = fromBase64(secret.slice("whsec_".length));
  if (raw === undefined) {
    throw new WebhookVerificationError("the secret is not base64 after whsec_");
  }
  if (raw.length === 0) throw new WebhookVerificationError("the secret is empty after whsec_");
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
      "verify",
    ]);
  } catch {
    throw new WebhookVerificationError("the secret is not a usable HMAC key");
  }
  const prefix = new TextEncoder().encode(`${id}.${stamp}.`);
  const signed = new Uint8Array(prefix.length + bytes.length);
  signed.set(prefix);
  signed.set(bytes, prefix.length);
  // Space-separated; a Headers joins repeated header lines with ", ".
  for (const candidate of signatures.split(/\s+/)) {
    const [version, value] = candidate.replace(/,$/, "").split(",", 2);
    if (version !== "v1" || !value) continue;
    const mac = fromBase64(value);
    if (mac === undefined) continue;
    // HMAC verification in constant time (Web Crypto's verify).
    if (await crypto.subtle.verify("HMAC", key, mac, signed)) {
      try {
        const text =
          typeof body === "string" ? body : new TextDecoder("utf-8", { fatal: true }).decode(bytes);
        return JSON.parse(text) as T;
      } catch {
        throw new WebhookVerificationError("the signed body is not JSON");
      }
    }
  }
  throw new WebhookVerificationError("no signature matches");
}
