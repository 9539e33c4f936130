//! Opaque page and sync tokens: a JSON payload, HMAC-signed with a key of
//! this emulator instance, base64url-encoded. A client cannot forge or edit
//! one, and a token of another emulator instance is refused.

use base64::Engine;
use ring::hmac;
use serde::de::DeserializeOwned;
use serde::Serialize;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Signs and checks tokens.
pub(super) struct Sealer(hmac::Key);

impl Sealer {
    pub(super) fn new(secret: &[u8]) -> Self {
        Sealer(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    pub(super) fn seal<T: Serialize>(&self, payload: &T) -> String {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let tag = hmac::sign(&self.0, &body);
        let mut out = body;
        out.extend_from_slice(&tag.as_ref()[..16]);
        B64.encode(out)
    }

    /// The payload, or `None` for anything not sealed by this instance.
    pub(super) fn open<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let raw = B64.decode(token.trim_end_matches('=')).ok()?;
        if raw.len() < 16 {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - 16);
        let want = hmac::sign(&self.0, body);
        // Constant-time enough for an emulator; ring's verify needs the full tag.
        if want.as_ref()[..16]
            .iter()
            .zip(tag)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
        {
            return None;
        }
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let s = Sealer::new(b"k");
        let t = s.seal(&(1u64, "cal"));
        assert_eq!(s.open::<(u64, String)>(&t), Some((1, "cal".into())));
        let mut bad = t.clone().into_bytes();
        bad[2] ^= 1;
        assert_eq!(
            s.open::<(u64, String)>(&String::from_utf8(bad).unwrap()),
            None
        );
        assert_eq!(Sealer::new(b"other").open::<(u64, String)>(&t), None);
        assert_eq!(s.open::<(u64, String)>("garbage!"), None);
    }
}
