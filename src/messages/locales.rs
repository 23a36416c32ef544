//! The locale fallback of API.md §8: the chain a message's locale is looked up along, and
//! the first locale of it with a template (the tenant's own before the built-in one).

use super::TemplateSet;
use crate::domain::locale::Locale;

/// Where a message's template comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Tenant,
    Builtin,
}

/// The locale fallback chain of §8: the request's locale, its language, the tenant's default,
/// its language, `en` (duplicates dropped).
pub fn chain(requested: Option<&Locale>, default: &Locale) -> Vec<Locale> {
    let mut out: Vec<Locale> = Vec::with_capacity(5);
    let mut push = |l: Locale| {
        if !out.contains(&l) {
            out.push(l);
        }
    };
    if let Some(r) = requested {
        push(r.clone());
        push(r.language());
    }
    push(default.clone());
    push(default.language());
    push(Locale::english());
    out
}

/// The first locale of the chain with a template: the tenant's own (`own(locale)`) wins over
/// the built-in at each step.
pub fn resolve(chain: &[Locale], own: impl Fn(&str) -> bool) -> (Locale, Source) {
    for l in chain {
        if own(l.as_str()) {
            return (l.clone(), Source::Tenant);
        }
        if TemplateSet::builtins().has(l.as_str()) {
            return (l.clone(), Source::Builtin);
        }
    }
    (Locale::english(), Source::Builtin)
}
