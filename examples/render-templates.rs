//! Render every built-in template's HTML with sample values into a directory, one
//! `<language>.html` each (used by scripts/template-screenshots.sh).
//!
//! `cargo run --example render-templates -- OUT_DIR`

use otpmint::messages::{TemplateSet, Vars, LANGUAGES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: render-templates OUT_DIR")?;
    std::fs::create_dir_all(&out)?;
    for lang in LANGUAGES {
        let vars = Vars {
            code: "042917",
            ttl_seconds: 600,
            expires_at: 1_767_225_600_000,
            app_name: "Acme",
            purpose: "login",
            email: "ada@example.com",
            locale: lang,
            link: "",
        };
        let m = TemplateSet::builtins()
            .render(lang, &vars)
            .map_err(|e| format!("{lang}: {}: {}", e.field, e.message))?;
        let html = m.html.ok_or_else(|| format!("{lang}: no HTML"))?;
        std::fs::write(format!("{out}/{lang}.html"), html)?;
        println!("{lang}: {}", m.subject);
    }
    Ok(())
}
