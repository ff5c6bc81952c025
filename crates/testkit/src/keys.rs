//! Key pairs a test makes on the spot, to sign `private_key_jwt` client assertions with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use serde_json::{json, Value};

/// An EC key pair: the private half signs, the public half is a JWK to register on a source.
pub struct SigningKey {
    pub algorithm: Algorithm,
    pkcs8: Vec<u8>,
    pub public_jwk: Value,
}

impl SigningKey {
    /// A fresh P-384 key (ES384).
    pub fn es384() -> Self {
        Self::generate(Algorithm::ES384)
    }

    /// A fresh P-256 key (ES256).
    pub fn es256() -> Self {
        Self::generate(Algorithm::ES256)
    }

    fn generate(algorithm: Algorithm) -> Self {
        let (signing, curve) = match algorithm {
            Algorithm::ES384 => (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
            Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
            other => panic!("no key generation for {other:?}"),
        };
        let random = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &random).expect("key generation");
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &random).expect("key pair");
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        let public_jwk = json!({
            "kty": "EC",
            "crv": curve,
            "x": URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
            "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
        });
        Self {
            algorithm,
            pkcs8: pkcs8.as_ref().to_vec(),
            public_jwk,
        }
    }

    /// A JWT of `claims`, signed with this key.
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(self.algorithm),
            claims,
            &EncodingKey::from_ec_der(&self.pkcs8),
        )
        .expect("signing")
    }
}

/// The claims of a valid client assertion for `client_id` at `audience`, valid 60 s, with a
/// fresh `jti`.
pub fn assertion_claims(client_id: &str, audience: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": crate::unique("jti-"),
    })
}
