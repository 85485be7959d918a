//! Passerelle's own HTML pages, French first: sign-in chooser, errors, logout.
//!
//! No script, no external resource: the strict CSP below allows only this file's stylesheet, by hash.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const STYLE: &str = "body{margin:0;font-family:Marianne,Arial,sans-serif;background:#f6f6f6;color:#161616;line-height:1.5}\
header{background:#fff;border-bottom:1px solid #ddd;padding:1rem 2rem;font-weight:700}\
header span{color:#000091}\
main{max-width:40rem;margin:2rem auto;background:#fff;padding:2rem;border:1px solid #ddd}\
h1{font-size:1.6rem;margin-top:0}\
.btn{display:inline-block;background:#000091;color:#fff;padding:.6rem 1.2rem;text-decoration:none;border:0;font-size:1rem;cursor:pointer;margin:.3rem 0}\
.btn:hover,.btn:focus{background:#1212ff}\
a:focus,.btn:focus,button:focus{outline:3px solid #0a76f6;outline-offset:2px}\
.secondary{background:#fff;color:#000091;border:1px solid #000091}\
.id{color:#555;font-size:.9rem;margin-top:2rem}\
ul.providers{list-style:none;padding:0}\
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;word-break:break-all}\
.en{color:#555;font-size:.9rem}\
.choice{margin:1rem 0}\
.fed{display:inline-flex;align-items:center;gap:.8rem;min-height:3.5rem;padding:.5rem 1.5rem .5rem .8rem;text-decoration:none;font-size:1.1rem;color:#fff}\
.fed strong{font-weight:700}.fed .small{display:block;font-size:.85rem;line-height:1.2}\
.fed .mark{display:inline-flex;align-items:center;justify-content:center;width:2.4rem;height:2.4rem;border-radius:50%;background:#fff;font-weight:700;font-size:.9rem}\
.proconnect{background:#000091}.proconnect:hover,.proconnect:focus{background:#1212ff}.proconnect .mark{color:#000091}\
.ncconnect{background:#00524c}.ncconnect:hover,.ncconnect:focus{background:#007168}.ncconnect .mark{color:#00524c}\
.fed:focus{outline:3px solid #0a76f6;outline-offset:2px}\
.about{margin:.3rem 0 0;font-size:.9rem}.about a{color:#000091}";

fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()))
    })
}

/// The Content-Security-Policy of every page Passerelle renders itself.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src data:; form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'",
        style_hash()
    )
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A full page around `body` (already escaped HTML).
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} — Passerelle</title><style>{STYLE}</style></head>\
<body><header><span>Passerelle</span> · accès sécurisé</header><main>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// An error page: what happened, what to do, and the correlation id to give to support.
pub fn error_page(
    title: &str,
    message: &str,
    english: &str,
    action: Option<(&str, &str)>,
    correlation_id: &str,
) -> String {
    let action = action
        .map(|(href, label)| {
            format!(
                "<p><a class=\"btn\" href=\"{}\">{}</a></p>",
                escape(href),
                escape(label)
            )
        })
        .unwrap_or_default();
    layout(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p>{action}<p class=\"en\" lang=\"en\">{}</p>\
<p class=\"id\">Si le problème persiste, communiquez cet identifiant à l'assistance : <strong>{}</strong></p>",
            escape(title),
            escape(message),
            escape(english),
            escape(correlation_id)
        ),
    )
}

/// Which button a provider gets on the sign-in page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonStyle {
    ProConnect,
    NcConnect,
    Generic,
}

/// One choice on the sign-in page.
pub struct ProviderChoice {
    pub label: String,
    pub href: String,
    pub style: ButtonStyle,
}

/// The sign-in chooser. ProConnect and NC Connect get buttons shaped like the federations' own kits
/// (drawn in CSS: no external resource), each with the explanatory link the kits ask for.
pub fn sign_in_page(choices: &[ProviderChoice]) -> String {
    let items: String = choices
        .iter()
        .map(|c| {
            let href = escape(&c.href);
            match c.style {
                ButtonStyle::ProConnect => format!(
                    "<li class=\"choice\"><a class=\"fed proconnect\" href=\"{href}\"><span class=\"mark\" aria-hidden=\"true\">PC</span>\
<span><span class=\"small\">S'identifier avec</span> <strong>ProConnect</strong></span></a>\
<p class=\"about\"><a href=\"https://www.proconnect.gouv.fr/\" rel=\"noopener\">Qu'est-ce que ProConnect ?</a></p></li>"
                ),
                ButtonStyle::NcConnect => format!(
                    "<li class=\"choice\"><a class=\"fed ncconnect\" href=\"{href}\"><span class=\"mark\" aria-hidden=\"true\">NC</span>\
<span><span class=\"small\">Se connecter avec</span> <strong>NC Connect</strong></span></a>\
<p class=\"about\"><a href=\"https://connect.gouv.nc/\" rel=\"noopener\">Qu'est-ce que NC Connect ?</a></p></li>"
                ),
                ButtonStyle::Generic => format!("<li class=\"choice\"><a class=\"btn\" href=\"{href}\">Se connecter avec {}</a></li>", escape(&c.label)),
            }
        })
        .collect();
    layout(
        "Connexion",
        &format!(
            "<h1>Connexion</h1><p>Choisissez votre moyen de connexion pour accéder au service.</p>\
<nav aria-label=\"Moyens de connexion\"><ul class=\"providers\">{items}</ul></nav>\
<p class=\"en\" lang=\"en\">Choose how to sign in.</p>"
        ),
    )
}

pub fn logged_out_page() -> String {
    layout(
        "Déconnexion",
        "<h1>Vous êtes déconnecté</h1><p>Votre session a été fermée.</p>\
<p><a class=\"btn\" href=\"/\">Revenir au service</a></p><p class=\"en\" lang=\"en\">You are signed out.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        let page = error_page(
            "Erreur",
            "<script>",
            "Error",
            Some(("/x?a=1&b=2", "Réessayer")),
            "abc123",
        );
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        assert!(
            page.contains("/x?a=1&amp;b=2")
                && page.contains("abc123")
                && page.contains("lang=\"fr\"")
        );
    }

    #[test]
    fn csp_allows_exactly_the_stylesheet() {
        let csp = content_security_policy();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        let expected =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(csp.contains(&expected));
    }
}
