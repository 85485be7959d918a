//! Validation of `[pages]`: the service's name, logo, support contact and accent colour.

use super::raw::{RawPages, S};
use super::{ConfigError, Validator};
use crate::pages::{Branding, Logo, Support};

/// A logo is shown in every page's header: a small image, not a photograph.
const MAX_LOGO_BYTES: usize = 256 * 1024;

impl Validator<'_> {
    pub(super) fn pages(&self, raw: &RawPages) -> Result<Branding, ConfigError> {
        let text = |v: &S<String>, key: &str, max: usize| -> Result<String, ConfigError> {
            let t = v.get_ref().trim();
            if t.is_empty() || t.chars().any(char::is_control) || t.chars().count() > max {
                return self.err(
                    v.span(),
                    key,
                    format!("one line of text, 1 to {max} characters"),
                );
            }
            Ok(t.to_string())
        };
        let service_name = match &raw.service_name {
            Some(v) => Some(text(v, "pages.service_name", 80)?),
            None => None,
        };
        let logo = match &raw.logo {
            Some(v) => Some(self.logo(v)?),
            None => None,
        };
        let support = match &raw.support {
            Some(v) => {
                let t = text(v, "pages.support", 200)?;
                if t.starts_with("https://") || t.starts_with("http://") {
                    url::Url::parse(&t).or_else(|e| {
                        self.err(v.span(), "pages.support", format!("not a URL: {e}"))
                    })?;
                    Some(Support::Url(t))
                } else if is_email(&t) {
                    Some(Support::Email(t))
                } else {
                    return self.err(
                        v.span(),
                        "pages.support",
                        "a URL (https://…) or an email address (assistance@example.gouv.fr)",
                    );
                }
            }
            None => None,
        };
        let accent = match &raw.accent_colour {
            Some(v) => {
                let c = v.get_ref().trim();
                if c.len() != 7
                    || !c.starts_with('#')
                    || !c[1..].bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return self.err(
                        v.span(),
                        "pages.accent_colour",
                        "a colour as #rrggbb, like \"#000091\"",
                    );
                }
                Some(c.to_ascii_lowercase())
            }
            None => None,
        };
        Ok(Branding {
            service_name,
            logo,
            support,
            accent,
        })
    }

    fn logo(&self, v: &S<String>) -> Result<Logo, ConfigError> {
        let key = "pages.logo";
        let path = v.get_ref().strip_prefix("file:").unwrap_or(v.get_ref());
        let bytes = std::fs::read(path)
            .or_else(|e| self.err(v.span(), key, format!("cannot read `{path}`: {e}")))?;
        if bytes.len() > MAX_LOGO_BYTES {
            return self.err(
                v.span(),
                key,
                format!(
                    "`{path}` is {} KB: at most {} KB",
                    bytes.len() / 1024,
                    MAX_LOGO_BYTES / 1024
                ),
            );
        }
        let content_type = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            "image/png"
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            "image/jpeg"
        } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
            "image/webp"
        } else if String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).contains("<svg") {
            "image/svg+xml"
        } else {
            return self.err(
                v.span(),
                key,
                format!("`{path}` is not a PNG, JPEG, WebP or SVG image"),
            );
        };
        Ok(Logo {
            bytes: bytes.into(),
            content_type,
        })
    }
}

fn is_email(t: &str) -> bool {
    let mut parts = t.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => {
            !local.is_empty()
                && domain.contains('.')
                && !t
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == '"')
        }
        _ => false,
    }
}
