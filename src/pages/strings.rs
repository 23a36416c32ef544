//! The words of the pages people see — a magic link's confirm page and the hosted sign-in
//! pages — in the ten languages of the built-in messages, one entry per language (`{app}`:
//! the tenant's name, `{email}`: the address, `{n}`: attempts left); the words themselves are
//! in `languages.rs`.

use super::languages::ALL;

/// The pages' words in one language.
pub struct PageStrings {
    pub lang: &'static str,
    pub confirm_title: &'static str,
    pub confirm_lead: &'static str,
    pub confirm_button: &'static str,
    pub ended_title: &'static str,
    pub ended_lead: &'static str,
    pub not_found: &'static str,
    /// A hosted page's form posted without its token or cookie (a page kept open past its
    /// cookie, or cookies blocked): what to do, in the session's language.
    pub form_expired_title: &'static str,
    pub form_expired_lead: &'static str,
    // The hosted sign-in pages (API.md §14.1).
    pub email_title: &'static str,
    pub email_lead: &'static str,
    pub email_label: &'static str,
    pub send: &'static str,
    pub code_title: &'static str,
    pub code_lead: &'static str,
    pub send_lead: &'static str,
    pub code_label: &'static str,
    pub verify: &'static str,
    pub resend: &'static str,
    pub bad_email: &'static str,
    pub wrong_code: &'static str,
    pub bad_code: &'static str,
    pub code_ended: &'static str,
    pub limited: &'static str,
    /// `limited` for a wait of minutes (`{n}` whole minutes, rounded up).
    pub limited_minutes: &'static str,
    /// The key's resends are spent (`otp.max_resends`): waiting does not help.
    pub no_more_codes: &'static str,
    pub not_sent: &'static str,
    /// The address may not be sent codes (it is on the tenant's suppression list): trying
    /// again does not help.
    pub refused: &'static str,
    /// The code could not be checked now (the service is busy or its database away): the
    /// same code may be tried again.
    pub busy: &'static str,
    /// The code verified, but the session's record is still being written: a reload goes on.
    pub finishing_title: &'static str,
    pub finishing_lead: &'static str,
    pub over_title: &'static str,
    pub over_lead: &'static str,
    /// `over_lead` for a session still open whose way back the tenant no longer allows (its
    /// `allowed_return_urls` changed): not expired, not failed, but it cannot be completed.
    pub withdrawn_lead: &'static str,
    /// The link from a sign-in that can no longer be completed back to the tenant's app.
    pub back: &'static str,
    /// The link from a page whose form could not be taken (403) to the page itself.
    pub open_again: &'static str,
    /// Said on the code page after a new code was sent (`{email}`: the masked address).
    pub resent: &'static str,
    /// What to do about a link or a page that is not there.
    pub not_found_lead: &'static str,
    /// Shown to anyone but the browser that finished the sign-in (API.md §17.2).
    pub done_title: &'static str,
    pub done_lead: &'static str,
}

/// What ends a sentence at the end of an app's name.
const SENTENCE_ENDS: &[char] = &['.', '!', '?', '…', '。', '！', '？'];

impl PageStrings {
    /// The words of `language` (a primary language subtag, any case), if it is one of the ten.
    pub fn known(language: &str) -> Option<&'static PageStrings> {
        ALL.iter().find(|s| s.lang.eq_ignore_ascii_case(language))
    }

    /// The words of a locale's language, else English.
    pub fn of(locale: &str) -> &'static PageStrings {
        let lang = locale
            .split('-')
            .next()
            .unwrap_or("en")
            .to_ascii_lowercase();
        ALL.iter().find(|s| s.lang == lang).unwrap_or(&ALL[0])
    }

    /// `text` with `{app}` as the app's name — and no second stop where the name ends a
    /// sentence itself (`Acme Ltd.`, `Yahoo!`) and the text puts one after it.
    pub fn with_app(text: &str, app: &str) -> String {
        let text = if app.ends_with(SENTENCE_ENDS) {
            text.replace("{app}.", "{app}").replace("{app}。", "{app}")
        } else {
            text.to_string()
        };
        text.replace("{app}", app)
    }

    /// "Please wait …" for a wait of `secs` seconds: in seconds up to two minutes, else in
    /// whole minutes, rounded up (nobody counts down 3,541 seconds).
    pub fn wait(&self, secs: u64) -> String {
        let secs = secs.max(1);
        if secs <= 120 {
            self.limited.replace("{n}", &secs.to_string())
        } else {
            self.limited_minutes
                .replace("{n}", &secs.div_ceil(60).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_told_in_seconds_up_to_two_minutes_then_in_whole_minutes() {
        let en = PageStrings::of("en");
        assert_eq!(en.wait(0), "Please wait 1 s, then try again.");
        assert_eq!(en.wait(120), "Please wait 120 s, then try again.");
        assert_eq!(en.wait(121), "Please wait 3 min, then try again.");
        assert_eq!(en.wait(3541), "Please wait 60 min, then try again.");
        assert_eq!(
            PageStrings::of("ja").wait(600),
            "10分待ってから、もう一度お試しください。"
        );
        // Every language has both forms, each with its number.
        for s in ALL {
            assert!(
                s.limited.contains("{n}") && s.limited_minutes.contains("{n}"),
                "{}",
                s.lang
            );
            assert_ne!(s.limited, s.limited_minutes, "{}", s.lang);
            // A check that could not be made is not a code that could not be sent.
            assert_ne!(s.busy, s.not_sent, "{}", s.lang);
        }
    }

    /// An app's name that ends a sentence itself gets no second stop after it, in any of
    /// the ten languages (found by the SMS audit: "Ltd.." in text messages).
    #[test]
    fn an_app_name_ending_a_sentence_gets_no_second_stop() {
        for s in ALL {
            for app in ["Acme Ltd.", "Yahoo!", "Acme"] {
                for text in [s.over_lead, s.withdrawn_lead, s.ended_lead, s.confirm_lead] {
                    let out = PageStrings::with_app(text, app);
                    assert!(out.contains(app), "{}: {out}", s.lang);
                    for doubled in ["..", "!.", ".。", "!。"] {
                        assert!(!out.contains(doubled), "{}: {out}", s.lang);
                    }
                }
            }
        }
        assert_eq!(
            PageStrings::with_app("Start again from {app}.", "Acme"),
            "Start again from Acme."
        );
        assert_eq!(
            PageStrings::with_app("Start again from {app}.", "Acme Ltd."),
            "Start again from Acme Ltd."
        );
    }
}
