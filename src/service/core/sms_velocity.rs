//! The SMS fraud guard's velocity count (API.md §17.1), one step for every send that texts
//! a number: a mint's, a resend's, a provider's test message.

use crate::domain::sms_guard::NumberFacts;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::service::{Core, ServiceError};
use crate::storage::{SmsSend, SmsTaken, SmsVelocity};

const DAY_MS: Millis = 86_400_000;

impl Core {
    /// Check the velocity limits for one SMS to `phone` (screened: `facts` are its) and
    /// count it, in one step, under `key_digest` (its code's; a code that never verifies
    /// stays in the count of unverified sends): true when counted, false when not (the
    /// limits are off, or the number is trusted), 429 `sms_velocity` over a limit.
    pub(crate) async fn take_sms_place(
        &self,
        tenant: &Tenant,
        phone: &str,
        facts: NumberFacts,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<bool, ServiceError> {
        let limits = {
            let l = &self.settings.load().limits;
            SmsVelocity {
                range_per_hour: l.sms_range_per_hour,
                unverified_per_country_per_hour: l.sms_unverified_per_country_per_hour,
            }
        };
        if limits.range_per_hour == 0 && limits.unverified_per_country_per_hour == 0 {
            return Ok(false);
        }
        let send = SmsSend {
            tenant: tenant.id.clone(),
            phone: phone.to_string(),
            key_digest: key_digest.to_vec(),
            range: facts.range,
            // Screened: a number of an allowed country has one.
            country: facts.country.unwrap_or_default(),
            trusted_since: (tenant.sms.trusted_days > 0)
                .then(|| now - i64::from(tenant.sms.trusted_days) * DAY_MS),
        };
        match self.write(move |s| s.take_sms(&send, &limits, now)).await? {
            Ok(SmsTaken::Counted) => Ok(true),
            Ok(SmsTaken::Trusted) => Ok(false),
            Err(refusal) => {
                let ms = refusal.retry_after_ms().max(1000);
                Err(ServiceError::SmsVelocity {
                    retry_after_secs: u64::try_from((ms + 999) / 1000).unwrap_or(3600),
                    setting: refusal.setting(),
                })
            }
        }
    }
}
