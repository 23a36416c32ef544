//! The response headers clients act on, written into the generated description (API.md
//! §18.5): what to wait before trying again, how to authenticate, whether a mint's answer
//! was given again.

/// The headers clients act on: `Retry-After` on the API's 429 and 503 (and on the 409 of
/// an Idempotency-Key in use; a refusal that is not about time, like
/// `resend_limit_reached`, answers without it), `WWW-Authenticate` on 401,
/// `Idempotent-Replayed` on a mint's replayed answers.
pub(super) fn declare_headers(doc: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let retry_after = json!({
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0}
    });
    let put = |response: Option<&mut Value>, name: &str, header: &Value| {
        if let Some(Value::Object(response)) = response {
            if let Value::Object(headers) = response.entry("headers").or_insert_with(|| json!({})) {
                headers.insert(name.into(), header.clone());
            }
        }
    };
    for name in ["RateLimited", "Unavailable", "RelayCheckBusy"] {
        put(
            doc.pointer_mut(&format!("/components/responses/{name}")),
            "Retry-After",
            &retry_after,
        );
    }
    put(
        doc.pointer_mut("/components/responses/Unauthorized"),
        "WWW-Authenticate",
        &json!({"description": "`Bearer`", "schema": {"type": "string", "enum": ["Bearer"]}}),
    );
    let replayed = json!({
        "description": "`true` on the first answer given again to a repeat with the same Idempotency-Key and body.",
        "schema": {"type": "string", "enum": ["true"]}
    });
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let mint = path == "/v1/otp" && method == "post";
            // The API's own refusals; `/readyz`'s 503 is a probe's answer and says no time.
            let api = path.starts_with("/v1/");
            let Some(Value::Object(responses)) = op.get_mut("responses") else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let inline = response.get("$ref").is_none();
                let limited = status == "429" || status == "503";
                if api && inline && (limited || (mint && status == "409")) {
                    put(Some(&mut *response), "Retry-After", &retry_after);
                }
                if mint && ["201", "202", "502"].contains(&status.as_str()) {
                    put(Some(&mut *response), "Idempotent-Replayed", &replayed);
                }
            }
        }
    }
}
