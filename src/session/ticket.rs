//! The cookie of a server-side session: an opaque ticket, a random id and a random secret.
//!
//! The id names the Redis entry; the secret never leaves the browser and Passerelle's memory, and with
//! the session keys it derives the entry's encryption key. So a copy of Redis reveals no identity and
//! cannot be turned into a cookie, and a guessed id is worthless without its 256-bit secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

const PREFIX: &str = "t1.";
const ID_BYTES: usize = 16;
const SECRET_BYTES: usize = 32;
/// Length of the base64url text of the id and the secret.
const ID_LEN: usize = 22;
const SECRET_LEN: usize = 43;

#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// base64url, 22 characters: a Redis key part, also the session id in logs and revocations.
    pub id: String,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({}, ***)", self.id)
    }
}

impl Ticket {
    pub fn new() -> Ticket {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Ticket {
            id: URL_SAFE_NO_PAD.encode(id),
            secret,
        }
    }

    /// Reads a cookie value; anything but the exact shape is `None`. Runs on every request of a
    /// server-side session: decoded into fixed arrays, no allocation but the id's.
    pub fn parse(text: &str) -> Option<Ticket> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('.')?;
        if id.len() != ID_LEN || secret.len() != SECRET_LEN {
            return None;
        }
        let mut id_bytes = [0u8; ID_BYTES];
        let mut secret_bytes = [0u8; SECRET_BYTES];
        if !canonical(id, &mut id_bytes) || !canonical(secret, &mut secret_bytes) {
            return None;
        }
        Some(Ticket {
            id: id.to_string(),
            secret: secret_bytes,
        })
    }

    pub fn cookie_value(&self) -> String {
        format!(
            "{PREFIX}{}.{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }

    /// What the stored value is bound to: the id and the secret, so an entry moved under another id
    /// does not open either.
    pub fn binding(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ID_LEN + SECRET_BYTES);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.secret);
        out
    }

    /// Constant-time: a cached session is found by id, and must still prove the secret.
    pub fn same_secret(&self, other: &Ticket) -> bool {
        self.secret.ct_eq(&other.secret).into()
    }
}

impl Default for Ticket {
    fn default() -> Self {
        Ticket::new()
    }
}

/// Decodes `text` into exactly `out`, and accepts it only in its canonical encoding (unused low bits
/// clear): one ticket, one text.
fn canonical<const N: usize>(text: &str, out: &mut [u8; N]) -> bool {
    if URL_SAFE_NO_PAD.decode_slice(text, out) != Ok(N) {
        return false;
    }
    let mut again = [0u8; 64];
    matches!(URL_SAFE_NO_PAD.encode_slice(*out, &mut again), Ok(n) if again[..n] == *text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_cookie() {
        let t = Ticket::new();
        let text = t.cookie_value();
        assert!(text.len() < 80, "{}", text.len());
        assert_eq!(Ticket::parse(&text), Some(t.clone()));
        assert_ne!(Ticket::new(), t);
    }

    #[test]
    fn anything_else_is_refused() {
        let text = Ticket::new().cookie_value();
        let mut cases = vec![
            String::new(),
            "t1.".into(),
            text.replacen("t1.", "t2.", 1),
            format!("{text}A"),
            text[..text.len() - 1].to_string(),
            text.replace('.', "_"),
            format!("{text}.x"),
        ];
        // A non-canonical last character (unused low bits set) must not name the same ticket.
        let last = text.chars().last().unwrap();
        let bumped = if last == 'A' { 'B' } else { 'A' };
        let mut noncanonical = text[..text.len() - 1].to_string();
        noncanonical.push(bumped);
        if Ticket::parse(&noncanonical).is_some() {
            assert_ne!(Ticket::parse(&noncanonical), Ticket::parse(&text));
        }
        cases.push(text.replace('-', "+"));
        for c in cases {
            if c == text {
                continue;
            }
            assert!(Ticket::parse(&c).is_none(), "{c}");
        }
    }

    #[test]
    fn secret_comparison() {
        let a = Ticket::new();
        let b = Ticket::parse(&a.cookie_value()).unwrap();
        assert!(a.same_secret(&b));
        assert!(!a.same_secret(&Ticket::new()));
        assert!(!format!("{a:?}").contains(&a.cookie_value()[25..]));
    }
}
