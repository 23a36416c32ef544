//! OtpMint-compatible routes: thin adapters over the same services, with OtpMint's field
//! names, status codes and bare-string bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpResponse};
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::auth::{is_admin, Body, BODY_LIMIT};
use super::error::{ApiError, CompatError, MAIL_ERROR, MISSING_FIELDS, SMTP_HOST_NOT_ALLOWED};
use super::respond::parse_key;
use super::State;
use crate::config::RegistrationMode;
use crate::domain::challenge::Status;
use crate::domain::email::RecipientEmail;
use crate::domain::keys::{CodeApi, SecretKey};
use crate::domain::policy::PolicyPatch;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Recipient;
use crate::domain::tenant::{Origin, TlsMode};
use crate::service::codes::mint::MintRequest;
use crate::service::codes::verify::{Caller, VerifyOutcome};
use crate::service::tenants::accounts::{NewTenant, SmtpInput};
use crate::service::ServiceError;

type CompatResult = Result<HttpResponse, CompatError>;

fn text(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// A JSON object, and whether a key stood in it twice: a field given twice (`mail` for two
/// people) is refused, not read as its last value.
struct Unique {
    map: Map<String, Value>,
    twice: bool,
}

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
                let (mut map, mut twice) = (Map::new(), false);
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    twice |= map.insert(k, v).is_some();
                }
                Ok(Unique { map, twice })
            }
        }
        d.deserialize_map(Keys)
    }
}

/// The body as a JSON object with each field once: else `bad`, the route's answer to fields
/// it cannot read (a body that is no JSON object, a field given twice).
async fn object(body: Body, bad: &'static str) -> Result<Map<String, Value>, CompatError> {
    match body.bytes_up_to(BODY_LIMIT).await {
        Ok(bytes) => match serde_json::from_slice::<Unique>(&bytes) {
            Ok(Unique { twice: true, .. }) | Err(_) => Err(CompatError::bad(bad)),
            Ok(Unique { map, .. }) => Ok(map),
        },
        Err(ApiError::TooLarge(_)) => Err(CompatError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            body: "Payload Too Large",
            retry_after: None,
        }),
        Err(ApiError::RequestTimeout) => Err(CompatError {
            status: StatusCode::REQUEST_TIMEOUT,
            body: "Request Timeout",
            retry_after: None,
        }),
        Err(_) => Err(CompatError::bad(bad)),
    }
}

fn string(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A string, or a non-negative integer read as its digits.
fn string_or_digits(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

pub async fn reg_secretkey(st: State, body: Body) -> CompatResult {
    let req = body.req.clone();
    let mode = st.services.core.settings.load().registration.mode;
    match mode {
        RegistrationMode::Closed => {
            return Err(CompatError {
                status: StatusCode::FORBIDDEN,
                body: "registration_closed",
                retry_after: None,
            })
        }
        RegistrationMode::Admin if !is_admin(&req, &st) => {
            return Err(CompatError::from_service(ServiceError::Unauthorized, false))
        }
        _ => {}
    }
    let m = object(body, MISSING_FIELDS).await?;
    let (Some(secret), Some(host), Some(port), Some(mail), Some(password)) = (
        string(&m, "secretKey"),
        // An empty host is a missing one.
        string(&m, "smtp_host").filter(|h| !h.trim().is_empty()),
        string_or_digits(&m, "smtp_port"),
        string(&m, "smtp_mail"),
        string(&m, "smtp_password"),
    ) else {
        return Err(CompatError::bad(MISSING_FIELDS));
    };
    if secret.chars().count() < 16 {
        return Err(CompatError::bad(
            "Error: secretKey must be at least 16 characters",
        ));
    }
    if secret.chars().count() > 512 {
        return Err(CompatError::bad(
            "Error: secretKey must be at most 512 characters",
        ));
    }
    // The same key works on `/v1` as a bearer token (API.md §2): only what a header carries.
    if !SecretKey::fits_a_header(&secret) {
        return Err(CompatError::bad(
            "Error: secretKey must be printable ASCII, without spaces at either end",
        ));
    }
    let port: u16 = match port.trim().parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(CompatError::bad(SMTP_HOST_NOT_ALLOWED)),
    };
    // Named after the sender's domain (API.md §18.8): the name appears on pages and in
    // messages, where an address would read oddly.
    let name = crate::domain::sender::name_from_sender(&mail);
    st.services
        .tenants
        .create_tenant(NewTenant {
            name,
            smtp: Some(SmtpInput {
                host,
                port,
                username: mail.clone(),
                password: Some(SecretString::from(password)),
                from: mail,
                tls: Some(TlsMode::default_for(port)),
                max_connections: None,
                oauth2: None,
            }),
            policy: PolicyPatch::default(),
            delivery: None,
            default_locale: None,
            origin: Origin::Compat,
            secret: Some(SecretKey::presented(&secret)),
            test: false,
            smtp_fallback: None,
            // Under open registration a tenant that registers itself waits for the admin
            // (API.md §17.6), whichever route it registered through.
            pages_approved: mode != RegistrationMode::Open || is_admin(&req, &st),
            check_relay: None,
        })
        .await
        .map_err(|e| CompatError::from_service(e, false))?;
    Ok(text(
        StatusCode::OK,
        "Registration of secretKey succeeded.".into(),
    ))
}

pub async fn otp(st: State, body: Body) -> CompatResult {
    let req = body.req.clone();
    let m = object(body, MAIL_ERROR).await?;
    let (Some(mail), Some(secret)) = (string(&m, "mail"), string(&m, "secretKey")) else {
        return Err(CompatError::bad(MAIL_ERROR));
    };
    let tenant = st
        .services
        .tenants
        .authenticate(&secret)
        .await
        .map_err(|e| CompatError::from_service(e, true))?;
    let email = RecipientEmail::parse(&mail).map_err(|_| CompatError::bad(MAIL_ERROR))?;
    let purpose = Purpose::parse(None).map_err(|e| CompatError::from_service(e.into(), true))?;
    let minted = st
        .services
        .codes
        .mint(
            &tenant,
            MintRequest {
                to: Recipient::Email(email),
                purpose,
                flavor: CodeApi::Compat,
                delivery: None,
                locale: None,
                link: None,
                stage: None,
            },
            &super::request_context(&req, &st),
        )
        .await
        .map_err(|e| CompatError::from_service(e, true))?;
    Ok(text(StatusCode::OK, minted.key.expose().to_string()))
}

pub async fn verify_otp(st: State, body: Body) -> CompatResult {
    let req = body.req.clone();
    let m = object(body, MISSING_FIELDS).await?;
    let (Some(key), Some(code)) = (string(&m, "shareableKey"), string_or_digits(&m, "otp")) else {
        return Err(CompatError::bad(MISSING_FIELDS));
    };
    let ctx = super::request_context(&req, &st);
    // The key's owner is found in the store call that reserves the attempt.
    let VerifyOutcome { tenant, result } = st
        .services
        .codes
        .verify(Caller::KeyOwner, &key, &code, CodeApi::Compat, &ctx)
        .await;
    let Some(tenant) = tenant else {
        return Err(CompatError::from_service(
            result.err().unwrap_or(ServiceError::OtpNotFound),
            false,
        ));
    };
    req.extensions_mut().insert(tenant.clone());
    match result {
        Ok(_) => Ok(text(StatusCode::CREATED, "OTP Matched!".into())),
        // A code that is not six digits is a mismatch to OtpMint's clients (no attempt used)
        // while the key is live; an ended key answers as it would for any code.
        Err(ServiceError::Invalid(_)) => {
            let status = async {
                let k = parse_key(&key, CodeApi::Compat)?;
                st.services
                    .codes
                    .otp_status(&tenant, &k, CodeApi::Compat)
                    .await
            }
            .await;
            let e = match status {
                Ok(v) => match v.status_at(st.services.core.now()) {
                    Status::Pending => ServiceError::Mismatch {
                        attempts_remaining: v.attempts_remaining(),
                    },
                    Status::Exhausted => ServiceError::AttemptsExhausted,
                    _ => ServiceError::OtpNotFound,
                },
                Err(e) => e,
            };
            Err(CompatError::from_service(e, false))
        }
        Err(e) => Err(CompatError::from_service(e, false)),
    }
}
