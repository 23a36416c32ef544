//! A tenant's own message template for one locale, as stored (sources, not rendered).

use super::Millis;

/// A tenant's template for one locale (API.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTemplate {
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The text message (API.md §12.3).
    pub sms: Option<String>,
    pub updated_at: Millis,
}
