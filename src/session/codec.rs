//! Authenticated encryption of cookie payloads with a key ring (AES-256-GCM).
//!
//! The first key encrypts; every key decrypts, so an operator rotates by prepending a new key and removing
//! the old one a session lifetime later, without logging anyone out (oauth2-proxy #963).
//! The purpose (session or login flow) is bound as associated data: a flow cookie can never be replayed
//! as a session cookie, nor the reverse.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Refuse to even base64-decode more than this: a cookie payload is never this large.
pub const MAX_ENCODED_LEN: usize = 24 * 1024;

/// What a payload is for; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Session,
    LoginFlow,
    LogoutFlow,
    IdTokenHint,
    /// A session kept in Redis, bound to its ticket.
    StoredSession,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"passerelle/session/v1",
            Purpose::LoginFlow => b"passerelle/login-flow/v1",
            Purpose::LogoutFlow => b"passerelle/logout-flow/v1",
            Purpose::IdTokenHint => b"passerelle/id-token-hint/v1",
            Purpose::StoredSession => b"passerelle/stored-session/v1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("payload too large")]
    TooLarge,
    #[error("payload is not valid base64url")]
    Encoding,
    #[error("payload is truncated or of an unknown version")]
    Format,
    #[error("no configured key matches the payload")]
    UnknownKey,
    #[error("payload failed authentication")]
    Forged,
}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
    /// Kept to derive per-session keys for server-side sessions.
    secret: [u8; 32],
}

/// The configured keys, each with its cipher set up once (key setup is a large part of the cost).
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl KeyRing {
    /// `keys` must not be empty: the config validation guarantees it.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        assert!(!keys.is_empty(), "a key ring needs at least one key");
        let keys = keys
            .iter()
            .map(|k| {
                let digest = Sha256::new()
                    .chain_update(b"passerelle key id")
                    .chain_update(k)
                    .finalize();
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&digest[..KEY_ID_LEN]);
                RingKey {
                    id,
                    cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*k)),
                    secret: *k,
                }
            })
            .collect();
        KeyRing { keys }
    }

    /// Encrypts with the first key and a fresh random nonce; returns base64url text safe in a cookie.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        URL_SAFE_NO_PAD.encode(seal_raw(&key.cipher, &key.id, purpose, plaintext))
    }

    /// Encrypts under a key derived from the first ring key and `binding` (a server-side session's
    /// ticket secret): the stored bytes open only for someone holding both, so neither a dump of the
    /// store nor a leaked ring key alone reveals a session.
    pub fn seal_bound(&self, purpose: Purpose, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        seal_raw(&derive(&key.secret, binding), &key.id, purpose, plaintext)
    }

    /// Opens what [`KeyRing::seal_bound`] made, with any key of the ring.
    pub fn open_bound(
        &self,
        purpose: Purpose,
        binding: &[u8],
        raw: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let (id, nonce, ciphertext) = split_raw(raw)?;
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(OpenError::UnknownKey);
        }
        candidates
            .find_map(|k| decrypt(&derive(&k.secret, binding), nonce, ciphertext, purpose))
            .ok_or(OpenError::Forged)
    }

    /// Decrypts and authenticates a payload made by [`KeyRing::seal`] with any key of the ring.
    pub fn open(&self, purpose: Purpose, text: &str) -> Result<Vec<u8>, OpenError> {
        if text.len() > MAX_ENCODED_LEN {
            return Err(OpenError::TooLarge);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| OpenError::Encoding)?;
        let (id, nonce, ciphertext) = split_raw(&raw)?;
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(OpenError::UnknownKey);
        }
        candidates
            .find_map(|k| decrypt(&k.cipher, nonce, ciphertext, purpose))
            .ok_or(OpenError::Forged)
    }
}

/// A per-binding AES-256-GCM key: HKDF-SHA256 of the ring key, with the binding as `info`.
fn derive(secret: &[u8; 32], binding: &[u8]) -> Aes256Gcm {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(b"passerelle/bound-key/v1"), secret)
        .expand(binding, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(okm))
}

fn seal_raw(
    cipher: &Aes256Gcm,
    id: &[u8; KEY_ID_LEN],
    purpose: Purpose,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: purpose.aad(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Key id, nonce and ciphertext of a sealed payload.
type Parts<'a> = (&'a [u8], [u8; NONCE_LEN], &'a [u8]);

fn split_raw(raw: &[u8]) -> Result<Parts<'_>, OpenError> {
    if raw.len() < 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
        return Err(OpenError::Format);
    }
    let (id, rest) = raw[1..].split_at(KEY_ID_LEN);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Format)?;
    Ok((id, nonce, ciphertext))
}

fn decrypt(
    cipher: &Aes256Gcm,
    nonce: [u8; NONCE_LEN],
    ciphertext: &[u8],
    purpose: Purpose,
) -> Option<Vec<u8>> {
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: purpose.aad(),
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(seeds: &[u8]) -> KeyRing {
        KeyRing::new(&seeds.iter().map(|s| [*s; 32]).collect::<Vec<_>>())
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let r = ring(&[1]);
        let a = r.seal(Purpose::Session, b"hello");
        let b = r.seal(Purpose::Session, b"hello");
        assert_ne!(a, b, "each seal uses a new nonce");
        assert_eq!(r.open(Purpose::Session, &a).unwrap(), b"hello");
    }

    #[test]
    fn rotation_old_key_still_decrypts_new_key_encrypts() {
        let old = ring(&[1]);
        let sealed_old = old.seal(Purpose::Session, b"x");
        let rotated = ring(&[2, 1]);
        assert_eq!(rotated.open(Purpose::Session, &sealed_old).unwrap(), b"x");
        let sealed_new = rotated.seal(Purpose::Session, b"y");
        assert_eq!(
            old.open(Purpose::Session, &sealed_new),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn bound_payloads_need_the_binding_and_a_ring_key() {
        let r = ring(&[1]);
        let sealed = r.seal_bound(Purpose::StoredSession, b"ticket-secret", b"identity");
        assert_eq!(
            r.open_bound(Purpose::StoredSession, b"ticket-secret", &sealed)
                .unwrap(),
            b"identity"
        );
        assert_eq!(
            r.open_bound(Purpose::StoredSession, b"other-secret", &sealed),
            Err(OpenError::Forged)
        );
        assert_eq!(
            ring(&[2]).open_bound(Purpose::StoredSession, b"ticket-secret", &sealed),
            Err(OpenError::UnknownKey)
        );
        assert_eq!(
            r.open_bound(Purpose::Session, b"ticket-secret", &sealed),
            Err(OpenError::Forged)
        );
        let rotated = ring(&[3, 1]);
        assert_eq!(
            rotated
                .open_bound(Purpose::StoredSession, b"ticket-secret", &sealed)
                .unwrap(),
            b"identity"
        );
        assert!(!sealed.windows(8).any(|w| w == b"identity"));
    }

    #[test]
    fn purpose_is_bound() {
        let r = ring(&[1]);
        let flow = r.seal(Purpose::LoginFlow, b"x");
        assert_eq!(r.open(Purpose::Session, &flow), Err(OpenError::Forged));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let r = ring(&[1]);
        assert_eq!(r.open(Purpose::Session, ""), Err(OpenError::Format));
        assert_eq!(r.open(Purpose::Session, "!!!"), Err(OpenError::Encoding));
        assert_eq!(
            r.open(Purpose::Session, &"A".repeat(MAX_ENCODED_LEN + 1)),
            Err(OpenError::TooLarge)
        );
        let sealed = r.seal(Purpose::Session, b"hello world");
        assert!(r
            .open(Purpose::Session, &sealed[..sealed.len() - 3])
            .is_err());
    }

    proptest! {
        #[test]
        fn round_trip_any_payload(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let r = ring(&[7, 8]);
            let sealed = r.seal(Purpose::Session, &payload);
            prop_assert_eq!(r.open(Purpose::Session, &sealed).unwrap(), payload);
        }

        #[test]
        fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..512), bit in any::<usize>()) {
            let r = ring(&[7]);
            let sealed = r.seal(Purpose::Session, &payload);
            let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            let bit = bit % (raw.len() * 8);
            raw[bit / 8] ^= 1 << (bit % 8);
            let tampered = URL_SAFE_NO_PAD.encode(raw);
            prop_assert!(r.open(Purpose::Session, &tampered).is_err());
        }
    }
}
