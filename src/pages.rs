//! Passerelle's own HTML pages, French first: sign-in chooser, errors, logout.
//!
//! No script, no external resource: the strict CSP below allows only this file's stylesheet, by hash.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const STYLE: &str = "body{margin:0;font-family:Marianne,Arial,sans-serif;background:#f6f6f6;color:#161616;line-height:1.5}\
header{background:#fff;border-bottom:1px solid #ddd;padding:1rem 2rem;font-weight:700;display:flex;align-items:center;gap:.6rem}\
header span{color:#000091}\
main{max-width:40rem;margin:2rem auto;background:#fff;padding:2rem;border:1px solid #ddd}\
h1{font-size:1.6rem;margin-top:0}\
.btn{display:inline-block;background:#000091;color:#fff;padding:.6rem 1.2rem;text-decoration:none;border:0;font-size:1rem;cursor:pointer;margin:.3rem 0}\
.btn:hover,.btn:focus{background:#1212ff}\
a:focus,.btn:focus,button:focus{outline:3px solid #0a76f6;outline-offset:2px}\
.secondary{background:#fff;color:#000091;border:1px solid #000091}\
.id{color:#555;font-size:.9rem;margin-top:2rem}\
ul.providers{list-style:none;padding:0}\
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}\
td{word-break:break-all}th{white-space:nowrap;font-weight:400}tr.identity th{font-weight:700}\
.en{color:#555;font-size:.9rem}\
.choice{margin:1rem 0}\
.fed{display:inline-flex;align-items:center;gap:.8rem;min-height:3.5rem;padding:.5rem 1.5rem .5rem .8rem;text-decoration:none;font-size:1.1rem;color:#fff}\
.fed strong{font-weight:700}.fed .small{display:block;font-size:.85rem;line-height:1.2}\
.fed .mark{display:inline-flex;align-items:center;justify-content:center;width:2.4rem;height:2.4rem;border-radius:50%;background:#fff;font-weight:700;font-size:.9rem}\
.proconnect{background:#000091}.proconnect:hover,.proconnect:focus{background:#1212ff}.proconnect .mark{color:#000091}\
.ncconnect{background:#00524c}.ncconnect:hover,.ncconnect:focus{background:#007168}.ncconnect .mark{color:#00524c}\
.fed:focus{outline:3px solid #0a76f6;outline-offset:2px}\
.about{margin:.3rem 0 0;font-size:.9rem}.about a{color:#000091}";

fn hash(css: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(css.as_bytes()))
}

/// How the pages present the service (`[pages]`): the person is on their administration's service, and
/// the pages should say so. With nothing set, Passerelle's own look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Branding {
    pub service_name: Option<String>,
    pub logo: Option<Logo>,
    pub support: Option<Support>,
    /// `#rrggbb`.
    pub accent: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Logo {
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
}

/// Where a person stuck on an error page can get help.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    Url(String),
    Email(String),
}

/// The branding with what is derived from it once: the accent stylesheet and the CSP that allows it.
struct Look {
    branding: Branding,
    /// Where the logo is served (`{prefix}/logo`).
    logo_href: String,
    accent_style: Option<String>,
    csp: String,
}

impl Look {
    fn new(branding: Branding, prefix: &str) -> Look {
        let accent_style = branding.accent.as_ref().map(|c| {
            format!(
                "header span{{color:{c}}}.btn{{background:{c}}}.btn:hover,.btn:focus{{background:{c};filter:brightness(1.25)}}\
.secondary{{background:#fff;color:{c};border-color:{c}}}.about a{{color:{c}}}header{{border-bottom:3px solid {c}}}"
            )
        });
        let mut styles = format!("'sha256-{}'", hash(STYLE));
        if let Some(a) = &accent_style {
            styles.push_str(&format!(" 'sha256-{}'", hash(a)));
        }
        let images = match branding.logo {
            Some(_) => "'self' data:",
            None => "data:",
        };
        Look {
            csp: format!("default-src 'none'; style-src {styles}; img-src {images}; form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'"),
            logo_href: format!("{prefix}/logo"),
            accent_style,
            branding,
        }
    }
}

/// Global because pages are rendered deep in error paths, and only their look depends on it; set at the
/// start and by every reload.
fn look() -> arc_swap::Guard<std::sync::Arc<Look>> {
    current().load()
}

fn current() -> &'static arc_swap::ArcSwap<Look> {
    static LOOK: OnceLock<arc_swap::ArcSwap<Look>> = OnceLock::new();
    LOOK.get_or_init(|| arc_swap::ArcSwap::from_pointee(Look::new(Branding::default(), "")))
}

pub fn set_branding(branding: Branding, prefix: &str) {
    current().store(std::sync::Arc::new(Look::new(branding, prefix)));
}

/// The logo, when `[pages] logo` is set.
pub fn logo() -> Option<Logo> {
    look().branding.logo.clone()
}

/// The Content-Security-Policy of every page Passerelle renders itself.
pub fn content_security_policy() -> String {
    look().csp.clone()
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
    let look = look();
    let b = &look.branding;
    let logo = match b.logo {
        Some(_) => format!(
            "<img src=\"{}\" alt=\"\" height=\"40\">",
            escape(&look.logo_href)
        ),
        None => String::new(),
    };
    let (header, site) = match &b.service_name {
        Some(name) => (format!("{logo}<span>{}</span>", escape(name)), escape(name)),
        None => (
            format!("{logo}<span>Passerelle</span> · accès sécurisé"),
            "Passerelle".to_string(),
        ),
    };
    let accent = look
        .accent_style
        .as_ref()
        .map(|a| format!("<style>{a}</style>"))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} — {site}</title><style>{STYLE}</style>{accent}</head>\
<body><header>{header}</header><main>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// The line of an error page that gets the person help: the identifier to give, and whom to give it to.
fn support_line(correlation_id: &str) -> String {
    let contact = match &look().branding.support {
        Some(Support::Url(url)) => format!(
            ", sur <a href=\"{}\" rel=\"noopener\">sa page</a>",
            escape(url)
        ),
        Some(Support::Email(address)) => format!(
            ", par courriel à <a href=\"mailto:{}\">{}</a>",
            escape(address),
            escape(address)
        ),
        None => String::new(),
    };
    format!(
        "<p class=\"id\">Si le problème persiste, communiquez cet identifiant à l'assistance : <strong>{}</strong>{contact}.</p>",
        escape(correlation_id)
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
            "<h1>{}</h1><p>{}</p>{action}<p class=\"en\" lang=\"en\">{}</p>{}",
            escape(title),
            escape(message),
            escape(english),
            support_line(correlation_id)
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
            "<h1>Connexion</h1><p>Choisissez votre moyen de connexion pour accéder {}.</p>\
<nav aria-label=\"Moyens de connexion\"><ul class=\"providers\">{items}</ul></nav>\
<p class=\"en\" lang=\"en\">Choose how to sign in.</p>",
            match &look().branding.service_name {
                Some(name) => format!("à {}", escape(name)),
                None => "au service".to_string(),
            }
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
    fn csp_allows_exactly_the_stylesheets() {
        let plain = Look::new(Branding::default(), "/.passerelle");
        assert!(
            plain.csp.contains("default-src 'none'")
                && plain.csp.contains("frame-ancestors 'none'")
        );
        assert!(plain.csp.contains(&hash(STYLE)));
        assert!(plain.csp.contains("img-src data:;"));
        let branded = Look::new(
            Branding {
                accent: Some("#00524c".into()),
                logo: Some(Logo {
                    bytes: bytes::Bytes::from_static(b"x"),
                    content_type: "image/png",
                }),
                ..Branding::default()
            },
            "/.passerelle",
        );
        let accent = branded.accent_style.as_deref().unwrap();
        assert!(branded.csp.contains(&hash(accent)) && branded.csp.contains(&hash(STYLE)));
        assert!(branded.csp.contains("img-src 'self' data:;"));
    }
}
