//! AWS Signature Version 4 for SES v2's `SendEmail` (API.md §15.2): the canonical request,
//! the string to sign and the derived key, as AWS documents them, checked against AWS's
//! published test suite (`aws-sig-v4-test-suite`). Small enough not to pull in the AWS SDK's
//! signing crate and its runtime.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What is signed: a request whose headers include `host` and `x-amz-date`.
pub struct Signing<'a> {
    pub method: &'a str,
    /// Already URI-encoded (`/v2/email/outbound-emails`).
    pub path: &'a str,
    /// The canonical query (`a=1&b=2`, sorted, encoded), empty without one.
    pub query: &'a str,
    /// Every header to sign, any case.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` header's value.
    pub amz_date: &'a str,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The `Authorization` header's value.
pub fn authorization(s: &Signing<'_>) -> String {
    let mut headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(k, v)| {
            // Trimmed, inner runs of spaces folded to one.
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        s.method,
        s.path,
        s.query,
        canonical_headers,
        signed,
        sha256_hex(s.payload)
    );
    let date = s.amz_date.get(..8).unwrap_or_default();
    let scope = format!("{date}/{}/{}/aws4_request", s.region, s.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        s.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(s.secret_access_key, date, s.region, s.service);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
        s.access_key_id,
        hex::encode(hmac(&key, to_sign.as_bytes()))
    )
}

/// `x-amz-date` for a time in Unix milliseconds.
pub fn amz_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn suite(method: &str, path: &str, query: &str, payload: &[u8]) -> String {
        authorization(&Signing {
            method,
            path,
            query,
            headers: &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            payload,
            region: "us-east-1",
            service: "service",
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: SECRET,
            amz_date: "20150830T123600Z",
        })
    }

    #[test]
    fn the_derived_key_is_aws_published_one() {
        assert_eq!(
            hex::encode(signing_key(SECRET, "20150830", "us-east-1", "service")),
            "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"
        );
    }

    #[test]
    fn signatures_match_aws_test_suite() {
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        for (name, method, path, query, sig) in [
            (
                "get-vanilla",
                "GET",
                "/",
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                "/",
                "Param1=value1&Param2=value2",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "get-utf8",
                "GET",
                "/%E1%88%B4",
                "",
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            ),
            (
                "post-vanilla",
                "POST",
                "/",
                "",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            assert_eq!(
                suite(method, path, query, b""),
                format!("{prefix}{sig}"),
                "{name}"
            );
        }
    }

    #[test]
    fn header_values_are_trimmed_and_names_sorted_and_lower_cased() {
        let a = authorization(&Signing {
            method: "POST",
            path: "/v2/email/outbound-emails",
            query: "",
            headers: &[
                ("X-Amz-Date", "20150830T123600Z"),
                ("content-type", "  application/json  "),
                ("Host", "email.eu-west-1.amazonaws.com"),
            ],
            payload: b"{}",
            region: "eu-west-1",
            service: "ses",
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: SECRET,
            amz_date: "20150830T123600Z",
        });
        assert!(a.contains("Credential=AKIDEXAMPLE/20150830/eu-west-1/ses/aws4_request"));
        assert!(a.contains("SignedHeaders=content-type;host;x-amz-date,"));
        assert_eq!(amz_date(1_440_938_160_000), "20150830T123600Z");
    }
}
