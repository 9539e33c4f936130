//! Standard Webhooks signatures (https://www.standardwebhooks.com): the
//! `webhook-signature` header is `v1,` and the base64 HMAC-SHA256, under
//! the secret's key, of `<webhook-id>.<webhook-timestamp>.<body>`. The
//! secret is `whsec_` followed by the base64 of the key. HMAC comes from
//! ring and base64 from the base64 crate, both already in the tree.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// A webhook sink's signing key.
pub(crate) struct Signer(ring::hmac::Key);

impl Signer {
    /// The key of a `whsec_...` secret; Err says what is wrong with it
    /// (never the secret itself).
    pub(crate) fn new(secret: &str) -> Result<Signer, String> {
        let b64 = secret
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with whsec_ (the Standard Webhooks form)")?;
        let key = STANDARD
            .decode(b64.trim())
            .map_err(|_| "the part after whsec_ is not base64".to_string())?;
        if key.len() < 24 {
            return Err(format!(
                "the key is {} bytes; use 24 to 64 random bytes (whsec_ + base64)",
                key.len()
            ));
        }
        Ok(Signer(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)))
    }

    /// The `webhook-signature` value for one delivery.
    pub(crate) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn the_published_test_vector_reproduces() {
        let signer = Signer::new(SECRET).expect("valid");
        assert_eq!(
            signer.sign(ID, TIMESTAMP, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn another_secret_body_or_time_signs_differently() {
        let good = Signer::new(SECRET)
            .expect("valid")
            .sign(ID, TIMESTAMP, BODY);
        let other = Signer::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("valid");
        assert_ne!(other.sign(ID, TIMESTAMP, BODY), good);
        let signer = Signer::new(SECRET).expect("valid");
        assert_ne!(signer.sign(ID, TIMESTAMP + 1, BODY), good);
        assert_ne!(signer.sign(ID, TIMESTAMP, b"{}"), good);
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_AAAA",
        ] {
            let err = Signer::new(bad).err().expect(bad);
            assert!(!err.contains(bad), "{err}");
        }
    }
}
