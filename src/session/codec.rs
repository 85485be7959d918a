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
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"passerelle/session/v1",
            Purpose::LoginFlow => b"passerelle/login-flow/v1",
            Purpose::LogoutFlow => b"passerelle/logout-flow/v1",
            Purpose::IdTokenHint => b"passerelle/id-token-hint/v1",
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
                }
            })
            .collect();
        KeyRing { keys }
    }

    /// Encrypts with the first key and a fresh random nonce; returns base64url text safe in a cookie.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = key
            .cipher
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
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts and authenticates a payload made by [`KeyRing::seal`] with any key of the ring.
    pub fn open(&self, purpose: Purpose, text: &str) -> Result<Vec<u8>, OpenError> {
        if text.len() > MAX_ENCODED_LEN {
            return Err(OpenError::TooLarge);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| OpenError::Encoding)?;
        if raw.len() < 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
            return Err(OpenError::Format);
        }
        let (id, rest) = raw[1..].split_at(KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Format)?;
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(OpenError::UnknownKey);
        }
        candidates
            .find_map(|k| {
                k.cipher
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: purpose.aad(),
                        },
                    )
                    .ok()
            })
            .ok_or(OpenError::Forged)
    }
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
