//! The lint a template passes before it is stored (API.md §8): every refusal, by field and
//! line — sizes, syntax, unknown variables, and a sample render that must show the code.

use std::collections::BTreeMap;

use super::*;

/// A character a body may not hold: NUL, ESC and the like would reach the person's mail or
/// phone as they are (and PostgreSQL's text cannot hold a NUL); line breaks and tabs are text.
fn stray_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\r' | '\t')
}

/// What breaks a subject's line: CR, LF and Unicode's line and paragraph separators (the
/// other line breaks, VT, FF and NEL, are control characters, refused as such).
const LINE_BREAKS: [char; 4] = ['\r', '\n', '\u{2028}', '\u{2029}'];

/// The app name a template is checked with (beside the tenant's own, [`lint_for`]).
const SAMPLE_APP: &str = "Example App";

/// Check a template before it is stored: every refusal, by field and line (sample values,
/// the app name `Example App`).
pub fn lint(f: &Fields, code_length: u32) -> Result<(), Vec<TemplateError>> {
    lint_with(f, code_length, SAMPLE_APP)
}

/// [`lint`], then the same render with the tenant's own name: a subject or text message
/// too long with it (a long name, repeated) is refused when it is saved, as the preview
/// names it, rather than falling back to the built-in one at every send.
pub fn lint_for(f: &Fields, code_length: u32, app_name: &str) -> Result<(), Vec<TemplateError>> {
    lint_with(f, code_length, SAMPLE_APP)?;
    if app_name != SAMPLE_APP {
        lint_with(f, code_length, app_name)?;
    }
    Ok(())
}

fn lint_with(f: &Fields, code_length: u32, app_name: &str) -> Result<(), Vec<TemplateError>> {
    let mut errors = Vec::new();
    if f.subject.trim().is_empty() {
        errors.push(TemplateError::new("subject", None, "must not be empty"));
    }
    if f.subject.chars().count() > SUBJECT_MAX_CHARS {
        errors.push(TemplateError::new(
            "subject",
            None,
            format!("must be at most {SUBJECT_MAX_CHARS} characters"),
        ));
    }
    if f.subject.contains(LINE_BREAKS) {
        errors.push(TemplateError::new("subject", Some(1), "must be one line"));
    } else if f.subject.chars().any(char::is_control) {
        // NUL, ESC and the like reach the person's mail client as they are.
        errors.push(TemplateError::new(
            "subject",
            Some(1),
            "must not contain control characters",
        ));
    } else if f.subject.chars().any(crate::domain::grammar::deceptive) {
        // As a sender's name: nothing that shows otherwise than it is (API.md §17.8).
        errors.push(TemplateError::new(
            "subject",
            Some(1),
            "must not contain invisible or bidirectional-control characters",
        ));
    }
    if f.text.trim().is_empty() {
        errors.push(TemplateError::new("text", None, "must not be empty"));
    }
    if f.sms.as_ref().is_some_and(|t| t.trim().is_empty()) {
        errors.push(TemplateError::new("sms", None, "must not be empty"));
    }
    let mut parts: Vec<(&'static str, &str)> = vec![("subject", &f.subject), ("text", &f.text)];
    if let Some(h) = &f.html {
        parts.push(("html", h));
    }
    if let Some(t) = &f.sms {
        parts.push(("sms", t));
    }
    for (field, src) in &parts {
        if *field != "subject" && src.len() > BODY_MAX_BYTES {
            errors.push(TemplateError::new(
                field,
                None,
                format!("must be at most {} KiB", BODY_MAX_BYTES / 1024),
            ));
        }
        if *field != "subject" {
            if let Some(at) = src.find(stray_control) {
                errors.push(TemplateError::new(
                    field,
                    Some(src[..at].matches('\n').count() + 1),
                    "must not contain control characters (line breaks and tabs are fine)",
                ));
            }
        }
    }
    // Compile each part the checks above passed (a part too long or holding control
    // characters is not compiled too); name unknown variables. Every part's errors come in
    // one answer, so that a template is not fixed one refusal at a time.
    let refused: Vec<&str> = errors.iter().map(|e| e.field).collect();
    let env = sandbox();
    for (field, src) in &parts {
        if refused.contains(field) {
            continue;
        }
        match env.template_from_named_str(field, src) {
            Err(e) => {
                errors.push(engine_error(field, &e));
            }
            Ok(t) => {
                let mut unknown: Vec<String> = t
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|v| {
                        !VARIABLES.contains(&v.as_str()) && !ENGINE_NAMES.contains(&v.as_str())
                    })
                    .collect();
                unknown.sort();
                for v in unknown {
                    errors.push(TemplateError::new(
                        field,
                        line_of(src, &v),
                        format!("unknown variable `{v}` (known: {})", VARIABLES.join(", ")),
                    ));
                }
            }
        }
    }
    // Render with a sample code: runtime errors, the fuel bound, and the code itself. A part
    // refused above stands in as a plain one, so that the render's errors of the others come
    // in the same answer (and none of the refused part's twice).
    let refused: Vec<&'static str> = errors.iter().map(|e| e.field).collect();
    if parts.iter().all(|(field, _)| refused.contains(field)) {
        return Err(errors);
    }
    let stand_in = |field: &str, src: &str| -> String {
        match field {
            _ if !refused.contains(&field) => src.to_string(),
            "subject" => "Code".into(),
            "html" => "<p>{{ code }}</p>".into(),
            _ => "{{ code }}".into(),
        }
    };
    let checked = Fields {
        subject: stand_in("subject", &f.subject),
        text: stand_in("text", &f.text),
        html: f.html.as_deref().map(|h| stand_in("html", h)),
        sms: f.sms.as_deref().map(|t| stand_in("sms", t)),
    };
    let before = errors.len();
    let sample = sample_code(code_length);
    let vars = Vars {
        code: &sample,
        ttl_seconds: 600,
        expires_at: 1_767_225_600_000,
        app_name,
        purpose: "login",
        email: "ada@example.com",
        locale: "en",
        link: "",
    };
    let mut set = TemplateSet {
        env: sandbox(),
        locales: BTreeMap::new(),
        bytes: 0,
    };
    set.add("lint", checked);
    if let Err(e) = set.render_sms("lint", &vars) {
        errors.push(e);
    }
    errors.extend(checked_render(&set, "lint", &vars).1);
    let mut at = 0;
    errors.retain(|e| {
        at += 1;
        at <= before || !refused.contains(&e.field)
    });
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The words of a refusal for a part that does not show the code.
pub(super) const CODE_MISSING: &str = "must contain {{ code }} (the code as one run of digits)";

/// A template rendered for these values, and what the render shows wrong: a subject that is
/// not one header line, control characters, the code not shown as one run of digits. The
/// lint asks it with its sample values and the preview with its own, so that a preview never
/// shows a message a send would not use (a send falls back to the built-in template on the
/// same grounds).
pub(super) fn checked_render(
    set: &TemplateSet,
    name: &str,
    vars: &Vars<'_>,
) -> (Option<Rendered>, Vec<TemplateError>) {
    let mut errors = Vec::new();
    // A line break or control character the subject renders (a string literal's, say) is
    // refused like one in its source (a send that meets one in a branch the lint's sample
    // did not take uses the built-in template).
    if let Ok(rendered) = set.raw_subject(name, vars) {
        if rendered.contains(LINE_BREAKS) {
            errors.push(TemplateError::new(
                "subject",
                Some(1),
                "must render as one line (it renders a line break)",
            ));
        } else if super::one_line(&rendered).chars().count() > SUBJECT_MAX_CHARS {
            // Counted as it is sent (white space runs collapse).
            errors.push(TemplateError::new(
                "subject",
                Some(1),
                format!(
                    "must render at most {SUBJECT_MAX_CHARS} characters (it renders {})",
                    super::one_line(&rendered).chars().count()
                ),
            ));
        } else if rendered.chars().any(char::is_control) {
            errors.push(TemplateError::new(
                "subject",
                Some(1),
                "must not render control characters",
            ));
        } else if rendered.chars().any(crate::domain::grammar::deceptive) {
            // A string literal's escape (`{{ "\u202E" }}`) writes what the source may not.
            errors.push(TemplateError::new(
                "subject",
                Some(1),
                "must not render invisible or bidirectional-control characters",
            ));
        }
    }
    let rendered = set.render(name, vars);
    match &rendered {
        Err(e) => errors.push(e.clone()),
        Ok(r) => {
            // Control characters a body renders (a string literal's, say), as in its source.
            for (field, rendered) in [
                ("text", Some(&r.text)),
                ("html", r.html.as_ref()),
                ("sms", r.sms.as_ref()),
            ] {
                if rendered.is_some_and(|t| t.contains(stray_control)) {
                    errors.push(TemplateError::new(
                        field,
                        None,
                        "must not render control characters (line breaks and tabs are fine)",
                    ));
                }
            }
            if !holds_code(&r.text, vars.code) {
                errors.push(TemplateError::new("text", None, CODE_MISSING));
            }
            if let Some(h) = &r.html {
                if !html_shows_code(h, vars.code) {
                    errors.push(TemplateError::new(
                        "html",
                        None,
                        "must show {{ code }} where a reader sees text, as one run of digits (not only in a comment, an attribute, the head, style or script)",
                    ));
                }
            }
            if let Some(t) = &r.sms {
                if !holds_code(t, vars.code) {
                    errors.push(TemplateError::new("sms", None, CODE_MISSING));
                }
            }
        }
    }
    (rendered.ok(), errors)
}

/// A code that no template text is likely to hold by accident.
fn sample_code(len: u32) -> String {
    crate::domain::code::OtpCode::generate(len.clamp(4, 10))
        .expose()
        .to_string()
}
