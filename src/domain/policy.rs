//! Policy: a tenant's code length, lifetime and attempt limit, with their ranges.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub code_length: u32,
    pub ttl_seconds: u32,
    pub max_attempts: u32,
}

pub const CODE_LENGTH: (u32, u32) = (4, 10);
pub const TTL_SECONDS: (u32, u32) = (1, 86_400);
pub const MAX_ATTEMPTS: (u32, u32) = (1, 20);

/// Optional changes to a policy; each given field is range-checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyPatch {
    pub code_length: Option<u32>,
    pub ttl_seconds: Option<u32>,
    pub max_attempts: Option<u32>,
}

/// serde's message without the value it quotes (``integer `5` ``, `string "x"`, an unknown
/// variant): an answer or a CLI error never repeats a value that was given, which may be a
/// secret. Field names, what was expected and the place stay.
pub fn without_values(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((unexpected, expected)) = msg
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            let kind = unexpected.split(['`', '"']).next().unwrap_or("").trim();
            return format!("{prefix}{kind}, expected {expected}");
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((_, expected)) = rest.rsplit_once("`, expected ") {
            return format!("unknown variant, expected {expected}");
        }
    }
    msg.to_string()
}

/// A field name and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn check(field: &str, v: Option<u32>, (lo, hi): (u32, u32), errs: &mut Vec<FieldError>) {
    if let Some(v) = v {
        if v < lo || v > hi {
            errs.push(FieldError::new(
                format!("policy.{field}"),
                format!("must be between {lo} and {hi}"),
            ));
        }
    }
}

impl PolicyPatch {
    pub fn validate(&self, errs: &mut Vec<FieldError>) {
        check("code_length", self.code_length, CODE_LENGTH, errs);
        check("ttl_seconds", self.ttl_seconds, TTL_SECONDS, errs);
        check("max_attempts", self.max_attempts, MAX_ATTEMPTS, errs);
    }

    pub fn apply(&self, p: Policy) -> Policy {
        Policy {
            code_length: self.code_length.unwrap_or(p.code_length),
            ttl_seconds: self.ttl_seconds.unwrap_or(p.ttl_seconds),
            max_attempts: self.max_attempts.unwrap_or(p.max_attempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_fields_are_named() {
        let mut errs = vec![];
        PolicyPatch {
            code_length: Some(3),
            ttl_seconds: Some(0),
            max_attempts: Some(21),
        }
        .validate(&mut errs);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "policy.code_length",
                "policy.ttl_seconds",
                "policy.max_attempts"
            ]
        );
        let mut ok = vec![];
        PolicyPatch {
            code_length: Some(10),
            ttl_seconds: Some(86_400),
            max_attempts: Some(1),
        }
        .validate(&mut ok);
        assert!(ok.is_empty());
    }
}
