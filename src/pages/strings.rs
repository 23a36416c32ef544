//! The words of the pages, in the ten languages of the built-in messages.

/// A page's words in one language (`{app}` is the tenant's name).
pub struct Strings {
    pub lang: &'static str,
    pub confirm_title: &'static str,
    pub confirm_lead: &'static str,
    pub confirm_button: &'static str,
    pub ended_title: &'static str,
    pub ended_lead: &'static str,
    pub expired_form: &'static str,
    pub not_found: &'static str,
}

const ALL: [Strings; 10] = [
    Strings {
        lang: "en",
        confirm_title: "Confirm sign-in",
        confirm_lead: "Continue to {app}? Press the button to confirm it is you.",
        confirm_button: "Continue",
        ended_title: "This link can no longer be used",
        ended_lead: "It was used already or it has expired. Ask {app} for a new one.",
        expired_form: "This page has expired. Open the link from your message again.",
        not_found: "This link is not valid.",
    },
    Strings {
        lang: "de",
        confirm_title: "Anmeldung bestätigen",
        confirm_lead: "Weiter zu {app}? Bestätigen Sie mit der Schaltfläche, dass Sie es sind.",
        confirm_button: "Weiter",
        ended_title: "Dieser Link kann nicht mehr verwendet werden",
        ended_lead:
            "Er wurde bereits verwendet oder ist abgelaufen. Fordern Sie bei {app} einen neuen an.",
        expired_form: "Diese Seite ist abgelaufen. Öffnen Sie den Link aus Ihrer Nachricht erneut.",
        not_found: "Dieser Link ist ungültig.",
    },
    Strings {
        lang: "es",
        confirm_title: "Confirma el inicio de sesión",
        confirm_lead: "¿Continuar a {app}? Pulsa el botón para confirmar que eres tú.",
        confirm_button: "Continuar",
        ended_title: "Este enlace ya no se puede usar",
        ended_lead: "Ya se usó o ha caducado. Pide uno nuevo a {app}.",
        expired_form: "Esta página ha caducado. Vuelve a abrir el enlace de tu mensaje.",
        not_found: "Este enlace no es válido.",
    },
    Strings {
        lang: "fr",
        confirm_title: "Confirmez la connexion",
        confirm_lead:
            "Continuer vers {app} ? Appuyez sur le bouton pour confirmer que c’est bien vous.",
        confirm_button: "Continuer",
        ended_title: "Ce lien n’est plus utilisable",
        ended_lead: "Il a déjà servi ou il a expiré. Demandez-en un nouveau à {app}.",
        expired_form: "Cette page a expiré. Rouvrez le lien de votre message.",
        not_found: "Ce lien n’est pas valide.",
    },
    Strings {
        lang: "it",
        confirm_title: "Conferma l’accesso",
        confirm_lead: "Continuare su {app}? Premi il pulsante per confermare che sei tu.",
        confirm_button: "Continua",
        ended_title: "Questo link non è più utilizzabile",
        ended_lead: "È già stato usato o è scaduto. Chiedine uno nuovo a {app}.",
        expired_form: "Questa pagina è scaduta. Riapri il link dal tuo messaggio.",
        not_found: "Questo link non è valido.",
    },
    Strings {
        lang: "pt",
        confirm_title: "Confirme o acesso",
        confirm_lead: "Continuar para {app}? Toque no botão para confirmar que é você.",
        confirm_button: "Continuar",
        ended_title: "Este link não pode mais ser usado",
        ended_lead: "Ele já foi usado ou expirou. Peça um novo a {app}.",
        expired_form: "Esta página expirou. Abra novamente o link da sua mensagem.",
        not_found: "Este link não é válido.",
    },
    Strings {
        lang: "nl",
        confirm_title: "Bevestig het inloggen",
        confirm_lead: "Doorgaan naar {app}? Druk op de knop om te bevestigen dat jij het bent.",
        confirm_button: "Doorgaan",
        ended_title: "Deze link kan niet meer worden gebruikt",
        ended_lead: "Hij is al gebruikt of verlopen. Vraag {app} om een nieuwe.",
        expired_form: "Deze pagina is verlopen. Open de link uit je bericht opnieuw.",
        not_found: "Deze link is ongeldig.",
    },
    Strings {
        lang: "pl",
        confirm_title: "Potwierdź logowanie",
        confirm_lead: "Przejść do {app}? Naciśnij przycisk, aby potwierdzić, że to Ty.",
        confirm_button: "Dalej",
        ended_title: "Tego linku nie można już użyć",
        ended_lead: "Został już użyty lub wygasł. Poproś {app} o nowy.",
        expired_form: "Ta strona wygasła. Otwórz ponownie link z wiadomości.",
        not_found: "Ten link jest nieprawidłowy.",
    },
    Strings {
        lang: "ja",
        confirm_title: "サインインの確認",
        confirm_lead: "{app} に進みますか？ご本人であることをボタンで確認してください。",
        confirm_button: "続ける",
        ended_title: "このリンクはもう使えません",
        ended_lead:
            "使用済みか、有効期限が切れています。{app} で新しいリンクを受け取ってください。",
        expired_form:
            "このページの有効期限が切れました。メッセージのリンクをもう一度開いてください。",
        not_found: "このリンクは無効です。",
    },
    Strings {
        lang: "zh",
        confirm_title: "确认登录",
        confirm_lead: "继续前往 {app}？请点击按钮确认是您本人。",
        confirm_button: "继续",
        ended_title: "此链接已无法使用",
        ended_lead: "它已被使用或已过期。请向 {app} 重新获取。",
        expired_form: "此页面已过期。请重新打开消息中的链接。",
        not_found: "此链接无效。",
    },
];

impl Strings {
    /// The words of a locale's language, else English.
    pub fn of(locale: &str) -> &'static Strings {
        let lang = locale
            .split('-')
            .next()
            .unwrap_or("en")
            .to_ascii_lowercase();
        ALL.iter().find(|s| s.lang == lang).unwrap_or(&ALL[0])
    }
}
