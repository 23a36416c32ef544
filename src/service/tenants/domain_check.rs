//! The domain check (API.md §16.4): the sender domain's SPF, DKIM (the stored selector) and
//! DMARC records, looked up through the system resolver or `dns.resolver`, each problem
//! answered with one plain sentence of advice. The whole check ends within 5 seconds.

use std::time::Duration;

use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;
use serde::Serialize;

use crate::domain::dkim::sender_domain;
use crate::domain::dkim::{aligned, shown_key};
use crate::domain::provider::ProviderKind;
use crate::domain::recipient::Channel;
use crate::domain::tenant::Tenant;
use crate::service::{ServiceError, Tenants};

/// The whole check's bound (API.md: under 5 s), and one look-up's.
const CHECK_TIMEOUT: Duration = Duration::from_millis(4500);
const LOOKUP_TIMEOUT: Duration = crate::net_policy::resolver::QUERY_TIMEOUT;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpfCheck {
    pub found: bool,
    pub record: Option<String>,
    /// Whether the record names the include of the tenant's relay or provider (absent when
    /// otpmint does not know which it needs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub includes_relay: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DkimCheck {
    pub found: bool,
    /// Whether the published key is the tenant's signing key.
    pub matches_key: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DmarcCheck {
    pub found: bool,
    /// `none`, `quarantine` or `reject`.
    pub policy: Option<String>,
    /// Whether otpmint's DKIM signature aligns with the sender's domain under the record's
    /// `adkim`.
    pub aligned: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DomainCheck {
    pub domain: String,
    pub spf: SpfCheck,
    pub dkim: DkimCheck,
    pub dmarc: DmarcCheck,
    pub advice: Vec<String>,
}

/// What SPF asks of the sender's domain for the way its email leaves. SPF is checked on the
/// envelope sender: Microsoft 365 and Google send with the `from` address, so their servers
/// belong in its domain's record; Postmark, SendGrid, Amazon SES and Resend (APIs and SMTP
/// relays alike) send with a return path of their own, whose SPF record the provider has you
/// publish there. Mailgun sends with its sending domain: its include is asked where that is
/// the `from` domain (its API's `domain`; over SMTP it is not known, and usually is).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SpfNeed {
    /// This include, in the `from` domain's record.
    Include(&'static str),
    /// Nothing of the `from` domain: the provider's return path carries SPF.
    ReturnPath,
    /// A relay otpmint knows nothing of.
    Unknown,
}

fn spf_need(t: &Tenant, domain: &str) -> SpfNeed {
    use crate::domain::tenant::TransportUse;
    let provider = t
        .provider(Channel::Email)
        .filter(|p| p.use_as == TransportUse::Primary || t.smtp.is_none());
    if let Some(p) = provider {
        return match p.kind {
            ProviderKind::Mailgun
                if !p
                    .setting("domain")
                    .is_some_and(|d| d.eq_ignore_ascii_case(domain)) =>
            {
                SpfNeed::ReturnPath
            }
            ProviderKind::Mailgun => SpfNeed::Include("mailgun.org"),
            _ => SpfNeed::ReturnPath,
        };
    }
    let Some(smtp) = t.smtp.as_ref() else {
        return SpfNeed::Unknown;
    };
    relay_spf(smtp.host.as_str())
}

/// What SPF asks of the `from` domain for an SMTP relay, by its host name.
fn relay_spf(host: &str) -> SpfNeed {
    let host = host.to_ascii_lowercase();
    // The host or a name under it: `smtp.office365.com` is Microsoft's, `notgmail.com` not.
    let under = |d: &str| host == d || host.ends_with(&format!(".{d}"));
    // SES's SMTP endpoints only: other names under amazonaws.com are anyone's EC2 hosts.
    let ses = host.starts_with("email-smtp.") && under("amazonaws.com");
    if under("office365.com") || under("outlook.com") {
        SpfNeed::Include("spf.protection.outlook.com")
    } else if under("gmail.com") || under("google.com") {
        SpfNeed::Include("_spf.google.com")
    } else if under("mailgun.org") {
        SpfNeed::Include("mailgun.org")
    } else if ses
        || ["sendgrid.net", "postmarkapp.com", "resend.com"]
            .iter()
            .any(|d| under(d))
    {
        SpfNeed::ReturnPath
    } else {
        SpfNeed::Unknown
    }
}

/// A tag of a `k=v; k=v` record.
/// A DKIM key record's tag, its name matched exactly (RFC 6376 §3.2: tag names are
/// case-sensitive, so a receiver ignores `K=`).
fn dkim_tag(record: &str, name: &str) -> Option<String> {
    record.split(';').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn tag(record: &str, name: &str) -> Option<String> {
    record.split(';').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
    })
}

/// Whether a TXT record is of this version (`v=spf1`, `v=DMARC1`, any case): the tag whole,
/// then the end or one of `after` (`v=spf10` is not SPF).
fn versioned(record: &str, version: &str, after: &[char]) -> bool {
    let r = record.trim_start();
    r.get(..version.len())
        .is_some_and(|v| v.eq_ignore_ascii_case(version))
        && r[version.len()..]
            .chars()
            .next()
            .is_none_or(|c| after.contains(&c))
}

/// The organizational domain, approximately: the last two labels.
fn org_domain(d: &str) -> String {
    let labels: Vec<&str> = d.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

impl Tenants {
    fn resolver(&self) -> Result<Resolver<TokioRuntimeProvider>, ServiceError> {
        let configured = self.core.settings.load().dns.resolver_addr();
        crate::net_policy::resolver::resolver(configured, 1).map_err(ServiceError::Internal)
    }

    /// A name's TXT records (each joined from its strings): none when the name has none,
    /// `Err` with the name when the look-up failed (no answer in time, or a server failure),
    /// so that an unknown is never reported as a missing record.
    async fn txt(r: &Resolver<TokioRuntimeProvider>, name: &str) -> Result<Vec<String>, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup(fqdn.as_str(), RecordType::TXT)).await {
            Ok(Ok(l)) => Ok(l
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Ok(Err(e)) if e.is_no_records_found() => Ok(Vec::new()),
            _ => Err(name.to_string()),
        }
    }

    /// Check the tenant's sender domain.
    pub async fn check_domain(&self, id: &str) -> Result<DomainCheck, ServiceError> {
        let t = self.core.tenant(id).await?;
        let domain = t.sender().and_then(sender_domain).ok_or_else(|| {
            ServiceError::rule("from", "the tenant has no sender address to check")
        })?;
        let r = self.resolver()?;
        tokio::time::timeout(CHECK_TIMEOUT, self.check_with(&t, &domain, &r))
            .await
            .map_err(|_| ServiceError::Unavailable("the DNS look-ups took too long".into()))
    }

    async fn check_with(
        &self,
        t: &Tenant,
        domain: &str,
        r: &Resolver<TokioRuntimeProvider>,
    ) -> DomainCheck {
        let mut advice = Vec::new();
        let key = shown_key(&t.dkim, Some(domain));
        let dkim_name = key.map(|k| k.record_name());
        let dmarc_name = format!("_dmarc.{domain}");
        let (spf_txt, dkim_txt, dmarc_txt) = tokio::join!(
            Self::txt(r, domain),
            async {
                match &dkim_name {
                    Some(n) => Self::txt(r, n).await,
                    None => Ok(Vec::new()),
                }
            },
            Self::txt(r, &dmarc_name),
        );
        // A look-up that failed says nothing of its record: that is the one piece of advice
        // for it, not "publish one".
        let unknown = |name: &String| {
            format!("The DNS look-up of {name} failed (no answer in time, or a server failure), so its record could not be checked: check the resolver (dns.resolver, or the system's) and try again.")
        };
        let mut failed = |t: Result<Vec<String>, String>| -> Option<Vec<String>> {
            t.map_err(|name| advice.push(unknown(&name))).ok()
        };
        let (spf_txt, dkim_txt, dmarc_txt) = (failed(spf_txt), failed(dkim_txt), failed(dmarc_txt));
        // SPF.
        let spfs: Vec<&String> = spf_txt
            .iter()
            .flatten()
            .filter(|v| versioned(v, "v=spf1", &[' ']))
            .collect();
        let need = spf_need(t, domain);
        let include = match need {
            SpfNeed::Include(inc) => Some(inc),
            SpfNeed::ReturnPath | SpfNeed::Unknown => None,
        };
        let spf = SpfCheck {
            found: !spfs.is_empty(),
            record: spfs.first().map(|s| s.to_string()),
            includes_relay: match (spfs.first(), include) {
                (Some(rec), Some(inc)) => Some(
                    rec.split_whitespace()
                        .any(|m| m.eq_ignore_ascii_case(&format!("include:{inc}"))),
                ),
                _ => None,
            },
        };
        match (spfs.len(), spf.includes_relay, include) {
            _ if spf_txt.is_none() => {}
            (0, _, Some(inc)) => advice.push(format!("{domain} publishes no SPF record: add a TXT record \"v=spf1 include:{inc} ~all\" at {domain}.")),
            // The provider's return path carries SPF: none is asked of this domain.
            (0, _, None) if need == SpfNeed::ReturnPath => {}
            (0, _, None) => advice.push(format!("{domain} publishes no SPF record: add a TXT record at {domain} that names your relay's servers, like \"v=spf1 include:<your relay's SPF domain> ~all\".")),
            (n, _, _) if n > 1 => advice.push(format!("{domain} publishes {n} SPF records and receivers treat that as an error: merge them into one.")),
            (_, Some(false), Some(inc)) => advice.push(format!("The SPF record of {domain} does not include {inc}, which sends the tenant's mail: add include:{inc} before its ~all or -all.")),
            _ => {}
        }
        // DKIM.
        // The key and its type: a record without `k=` is RSA (RFC 6376 §3.6.1), so an
        // Ed25519 key published as RSA (or the reverse) is not the tenant's key.
        let published = dkim_txt.iter().flatten().find_map(|v| {
            let p = dkim_tag(v, "p")?.split_whitespace().collect::<String>();
            Some((p, dkim_tag(v, "k").unwrap_or_else(|| "rsa".into())))
        });
        let dkim = DkimCheck {
            found: published.is_some(),
            matches_key: match (&published, key) {
                (Some((p, kind)), Some(k)) => *p == k.public_key && kind == k.algorithm.k(),
                _ => false,
            },
        };
        // A key for another domain never signs this sender's mail: publishing it would not
        // help, so that comes first.
        match (key, &dkim) {
            (Some(k), _) if !aligned(domain, &k.domain) => advice.push(format!("The DKIM key signs for {}, but mail is sent from {domain}: make a key for {domain}.", k.domain)),
            _ if dkim_txt.is_none() => {}
            (None, _) => advice.push("The tenant has no DKIM key: POST /v1/tenant/dkim makes one and answers the TXT record to publish.".into()),
            (Some(k), d) if !d.found => advice.push(format!("The DKIM record {} is not published: add the TXT record GET /v1/tenant/dkim shows.", k.record_name())),
            (Some(k), d) if !d.matches_key => advice.push(format!("The DKIM record {} holds another key than the tenant's: publish the value GET /v1/tenant/dkim shows.", k.record_name())),
            _ => {}
        }
        // DMARC: the sender's domain, else its organizational domain.
        let dmarc_of = |txt: Vec<String>| -> Vec<String> {
            txt.into_iter()
                .filter(|v| versioned(v, "v=dmarc1", &[';', ' ', '\t']))
                .collect()
        };
        let mut dmarc_known = dmarc_txt.is_some();
        let mut dmarc_recs = dmarc_txt.map(dmarc_of).unwrap_or_default();
        let org = org_domain(domain);
        if dmarc_known && dmarc_recs.is_empty() && org != domain {
            match Self::txt(r, &format!("_dmarc.{org}")).await {
                Ok(txt) => dmarc_recs = dmarc_of(txt),
                Err(name) => {
                    advice.push(unknown(&name));
                    dmarc_known = false;
                }
            }
        }
        // More than one record: receivers apply none (RFC 7489 §6.6.3).
        let several = dmarc_recs.len() > 1;
        let dmarc_rec = dmarc_recs.first().filter(|_| !several).cloned();
        let strict = dmarc_rec
            .as_deref()
            .and_then(|r| tag(r, "adkim"))
            .is_some_and(|a| a.eq_ignore_ascii_case("s"));
        // Only a key otpmint signs this sender's mail with can pass (API.md §16.3): one for
        // a subdomain of the sender's domain is shown, but never signs.
        let dkim_aligned = key.is_some_and(|k| {
            if !aligned(domain, &k.domain) {
                false
            } else if strict {
                k.domain.eq_ignore_ascii_case(domain)
            } else {
                org_domain(&k.domain) == org
            }
        });
        let dmarc = DmarcCheck {
            found: !dmarc_recs.is_empty(),
            policy: dmarc_rec.as_deref().and_then(|r| tag(r, "p")),
            aligned: dkim_aligned && dkim.matches_key,
        };
        if !dmarc_known {
            // Its advice is the failed look-up's.
        } else if several {
            advice.push(format!("{} DMARC records are published for {domain}, and receivers then apply none of them: keep one.", dmarc_recs.len()));
        } else if !dmarc.found {
            advice.push(format!("{domain} publishes no DMARC record: add a TXT record \"v=DMARC1; p=none; rua=mailto:dmarc@{org}\" at _dmarc.{domain}, and tighten p= once reports look right."));
        } else if !dkim_aligned && key.is_some() {
            advice.push(format!("DMARC of {domain} would not pass on otpmint's DKIM signature: the key's domain must match the sender's{}, and its record must be published.", if strict { " exactly (adkim=s)" } else { "" }));
        }
        DomainCheck {
            domain: domain.to_string(),
            spf,
            dkim,
            dmarc,
            advice,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{relay_spf, SpfNeed};

    #[test]
    fn a_relay_is_known_by_its_host_or_a_name_under_it_and_nothing_else() {
        for (host, need) in [
            (
                "smtp.office365.com",
                SpfNeed::Include("spf.protection.outlook.com"),
            ),
            ("smtp.gmail.com", SpfNeed::Include("_spf.google.com")),
            ("smtp.mailgun.org", SpfNeed::Include("mailgun.org")),
            ("smtp.sendgrid.net", SpfNeed::ReturnPath),
            ("email-smtp.eu-west-1.amazonaws.com", SpfNeed::ReturnPath),
            ("smtp.postmarkapp.com", SpfNeed::ReturnPath),
            ("smtp.resend.com", SpfNeed::ReturnPath),
            // Names that only end like one: someone else's relay.
            ("notgmail.com", SpfNeed::Unknown),
            ("evilsendgrid.net", SpfNeed::Unknown),
            (
                "ec2-192-0-2-1.eu-west-1.compute.amazonaws.com",
                SpfNeed::Unknown,
            ),
            ("mail.acme.example", SpfNeed::Unknown),
        ] {
            assert!(relay_spf(host) == need, "{host}");
        }
    }
}
