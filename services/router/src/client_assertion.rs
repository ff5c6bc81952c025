//! `private_key_jwt` client authentication (RFC 7523 §2.2, as OpenID Connect and SMART Backend
//! Services use it): the client proves itself with a short-lived JWT signed by the private key
//! whose public half (a JWK) is registered on the source, instead of a shared secret.
//!
//! What an assertion must carry: `iss` = `sub` = the client ID; `aud` = the token URL ingress is
//! configured with; `exp` at most [`MAX_LIFETIME_SECS`] ahead; a `jti` never seen before for this
//! client while the assertion is valid (kept in Postgres, see `ConfigStore::authenticate_assertion`).
//! Signatures: RS256, RS384 (RSA keys), ES256 (P-256), ES384 (P-384).

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Longest an assertion may be valid for, from now.
pub const MAX_LIFETIME_SECS: u64 = 300;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Why an assertion or a key is refused; the text is safe to show the client.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AssertionError {
    #[error("client_assertion is not a JWT: {0}")]
    Malformed(String),
    #[error("client_assertion: {0}")]
    Invalid(String),
    /// Anything that depends on the client's registered key (unknown client, no key, a key or
    /// alg that does not fit, a bad signature): one text for all, so a caller without the
    /// private key cannot learn which client IDs exist or what key they registered.
    #[error("{NOT_VERIFIED}")]
    NotVerified,
}

/// The one refusal of an assertion that did not prove possession of a registered key.
pub const NOT_VERIFIED: &str =
    "client_assertion: unknown client, or the signature does not verify with its registered key";

/// Checks a JWK to register on a source: a public RSA or EC (P-256, P-384) key.
pub fn check_public_jwk(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("public_jwk is not JSON: {error}"))?;
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        if value.get(private).is_some() {
            return Err(format!(
                "public_jwk must be a public key; it has the private member '{private}'"
            ));
        }
    }
    let jwk: Jwk =
        serde_json::from_value(value).map_err(|error| format!("public_jwk is not a JWK: {error}"))?;
    match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => {}
        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) => {
            use jsonwebtoken::jwk::EllipticCurve;
            if !matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) {
                return Err("public_jwk: only the curves P-256 and P-384 are supported".into());
            }
        }
        _ => return Err("public_jwk: only RSA and EC keys are supported".into()),
    }
    DecodingKey::from_jwk(&jwk).map_err(|error| format!("public_jwk is not usable: {error}"))?;
    Ok(())
}

/// The client an assertion claims to come from (`iss`), read before any check: it names the
/// key to check the assertion with.
pub fn claimed_client(assertion: &str) -> Result<String, AssertionError> {
    use base64::Engine;
    let payload = assertion
        .split('.')
        .nth(1)
        .ok_or_else(|| AssertionError::Malformed("expected header.payload.signature".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AssertionError::Malformed("the payload is not base64url".into()))?;
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let issuer: Issuer = serde_json::from_slice(&bytes)
        .map_err(|_| AssertionError::Malformed("the payload is not a JSON object".into()))?;
    issuer
        .iss
        .filter(|iss| !iss.is_empty())
        .ok_or_else(|| AssertionError::Invalid("iss (the client ID) is missing".into()))
}

/// What a verified assertion tells: its `jti` and when it expires (Unix seconds).
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub jti: String,
    pub expires_unix: u64,
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    jti: Option<String>,
}

/// Verifies `assertion` for `client_id` with the source's registered `public_jwk`, for
/// `audience` (the token URL), at `now_unix`. Replay is checked by the caller with the `jti`.
pub fn verify(
    assertion: &str,
    client_id: &str,
    public_jwk: &str,
    audience: &str,
    now_unix: u64,
) -> Result<Verified, AssertionError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|error| AssertionError::Malformed(error.to_string()))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(AssertionError::Invalid(format!(
            "alg {:?} is not accepted (use RS256, RS384, ES256 or ES384)",
            header.alg
        )));
    }
    let jwk: Jwk = serde_json::from_str(public_jwk).map_err(|_| AssertionError::NotVerified)?;
    if let Some(key_algorithm) = jwk.common.key_algorithm {
        if format!("{key_algorithm:?}") != format!("{:?}", header.alg) {
            return Err(AssertionError::NotVerified);
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| AssertionError::NotVerified)?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_string());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    // jsonwebtoken checks the signature before the claims: a refusal that names a claim comes
    // from a caller who holds the key, and may say what is wrong.
    let data = jsonwebtoken::decode::<Claims>(assertion, &key, &validation).map_err(|error| {
        use jsonwebtoken::errors::ErrorKind;
        AssertionError::Invalid(match error.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => return AssertionError::NotVerified,
            ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
            ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
            ErrorKind::InvalidAudience => format!("aud must be {audience}"),
            ErrorKind::InvalidIssuer => "iss must be the client ID".into(),
            ErrorKind::InvalidSubject => "sub must be the client ID".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("the claim {claim} is missing"),
            other => format!("{other:?}"),
        })
    })?;
    let claims = data.claims;
    if claims.exp > now_unix + MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err(AssertionError::Invalid(format!(
            "exp is too far ahead (an assertion may be valid for at most {MAX_LIFETIME_SECS} s)"
        )));
    }
    let jti = claims
        .jti
        .filter(|jti| !jti.is_empty())
        .ok_or_else(|| AssertionError::Invalid("the claim jti is missing".into()))?;
    Ok(Verified {
        jti,
        expires_unix: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    use serde_json::json;

    const AUDIENCE: &str = "https://carrier.example.org/oauth/token";

    /// A P-384 key: its PKCS#8 document and its public JWK.
    fn key() -> (Vec<u8>, String) {
        let random = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &random).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &random).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-384",
            "x": URL_SAFE_NO_PAD.encode(&point[1..49]),
            "y": URL_SAFE_NO_PAD.encode(&point[49..]),
        });
        (pkcs8.as_ref().to_vec(), jwk.to_string())
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(pkcs8: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES384),
            &claims,
            &EncodingKey::from_ec_der(pkcs8),
        )
        .unwrap()
    }

    fn claims(client_id: &str) -> serde_json::Value {
        json!({ "iss": client_id, "sub": client_id, "aud": AUDIENCE, "exp": now() + 60, "jti": "a-1" })
    }

    #[test]
    fn a_well_formed_assertion_verifies_and_names_its_jti() {
        let (pkcs8, jwk) = key();
        let assertion = sign(&pkcs8, claims("cl_1"));
        assert_eq!(claimed_client(&assertion).unwrap(), "cl_1");
        let verified = verify(&assertion, "cl_1", &jwk, AUDIENCE, now()).unwrap();
        assert_eq!(verified.jti, "a-1");
    }

    #[test]
    fn assertions_are_refused_with_a_reason() {
        let (pkcs8, jwk) = key();
        let (other_pkcs8, _) = key();
        let refusal = |claims: serde_json::Value, pkcs8: &[u8]| {
            verify(&sign(pkcs8, claims), "cl_1", &jwk, AUDIENCE, now())
                .unwrap_err()
                .to_string()
        };
        let mut wrong_audience = claims("cl_1");
        wrong_audience["aud"] = json!("https://elsewhere.example.org/token");
        assert!(refusal(wrong_audience, &pkcs8).contains("aud must be"));
        let mut expired = claims("cl_1");
        expired["exp"] = json!(now() - 120);
        assert!(refusal(expired, &pkcs8).contains("expired"));
        let mut long_lived = claims("cl_1");
        long_lived["exp"] = json!(now() + 3_600);
        assert!(refusal(long_lived, &pkcs8).contains("too far ahead"));
        let mut other_subject = claims("cl_1");
        other_subject["sub"] = json!("cl_2");
        assert!(refusal(other_subject, &pkcs8).contains("sub must be"));
        let mut no_jti = claims("cl_1");
        no_jti.as_object_mut().unwrap().remove("jti");
        assert!(refusal(no_jti, &pkcs8).contains("jti"));
        assert_eq!(refusal(claims("cl_1"), &other_pkcs8), NOT_VERIFIED);
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("cl_1"),
            &EncodingKey::from_secret(b"guessable"),
        )
        .unwrap();
        assert!(verify(&hmac, "cl_1", &jwk, AUDIENCE, now())
            .unwrap_err()
            .to_string()
            .contains("not accepted"));
        assert!(claimed_client("not-a-jwt").is_err());
    }

    /// A 2048-bit RSA key made for this test only (PKCS#1 DER, base64), and its modulus
    /// (base64url): ring cannot generate RSA keys.
    const RSA_PRIVATE_DER: &str = concat!(
        "MIIEogIBAAKCAQEA22sBA+/qim7zixJZVD6vpwILnbB/94xmTk6EFU0urNf3dIXLsbxQsI3Bee3AhyurqBMWfu0Jg7w4Y8N5",
        "8dyN9YplTKfZ+IBJe7uqc6Q/8lmboi2cWpLmUxK+thqKCSGsAKiFwn8WGdNpsje7XMRJK0VGlD68TGgxklH63HgJPSnRzzt2",
        "FH+1jwxkuaMHrmmbdBKqyVl3lkl11fs9hvN87/uP6sMV9MwO+2kjJ420HKjgpM5DPdmh7LcFNGAmEW0nItIToogbB9X4I/qH",
        "BhYJW6Tz3kQs+Xnz67dBxMixJWQPxT184gknqCp1WMLvs/2E6sI+0NoNiEkQS+c82LotZQIDAQABAoIBADRg7yFeOrZYxaU3",
        "mGECxOJAm/7FBUtWNg7v8dp27hM/S/iCPw27B2UaNetSLQFnlKb/BYH/umN7AVgZcCkjTjUlGEkMEb3ffAtAUbCg703+g6db",
        "rYU2p6qBoUqt+7Ex21Jd6G51cZRxMjxjzwOWbOQaOb7GWiOARQMptFHAiu4RNhExDyzwAWcE3j6S974rXx4i/I874DO4WGgE",
        "tHRwIxywHs40NGAidb1gWZ+R+Z6qxkrsZiIHZzpSgGI7gZBHck1VfNu3U16l93lH2q//UOhDkmwdeH5E0isvpNciGTs7hoLv",
        "52KNlnG08by909HyZSj3B0tkx/Z732N+jeah+HECgYEA+YyZ9sQqaXfKW061H+z+ynh76v+TzWC6kffbFEOmkdRs21TELPFY",
        "5gsGEspX/Ag/+V0gwgYxKYOn57WTyNdSM4ZYXudZ7N440UhRXf1rrG3b4y4ZICsH9GZ/dgckdbTnsyskIS/Ugez3Xy6yoYIt",
        "eQnXT2TvHfsFTY3c0hBIlJUCgYEA4RcCHd/YPkJlOdNOtJsMKHTzJUDk3/cZPnUNBUgeMjrFUGJJmWmkNgUjZfpwcq9GIMHK",
        "Oslq9vG4wi8lxtO6X71R7X3/wIl03QGgYcOI1QBmJmUm/G5WoaoUUufKVAUVxaJ1P9Jou1vWAkR/YO4gWxZm+BIiksipgXzU",
        "aFmXsZECgYAe+eP2rJzzIIp+0QNMpjduXIxNPFJVcQdXrSOFnWwkt/CXPStoxMCbNY0YcgN/5mpCgtvZGbmqhIwoB/MDQC8U",
        "9D0t8pvH+kGlQMvQ1e8ypSRhS8yUoKLJJJv3w6Uz8zO7msROVkiTpB2EtCA6ShVo697NHSNNXmZnHQ/nB1xrDQKBgEJyu2I8",
        "WacPjLiEY+C3QOCUnc7qmGZxmNcyUNS1VIy5gtRXH6kVYa+81pVdWGLS0V4MN3ohSd16wHM63ekTShrHVe9JWf3p1kEEIOeb",
        "hMJ0qrM8+0RcAmEZR4St/rHNCn9clUZxBBADbWsf84aW5aBePamQGPrCGCAszLu9byWxAoGAb87Ks63dX+TmBWsxvplA3Qe7",
        "3eBOxinpxePS9uc/TAl/DooQIwBx1ESkA13BUB7HT0mZjCtiiTCwWv14YDH0APNAoyA7HSVqKNvnkXPcRikd0NiMiO2N12rM",
        "/nug1egtva/Zln5kY3oAlyg8lyehCgdZuOls4IE3CwfJGGhD288=",
    );
    const RSA_MODULUS: &str = concat!(
        "22sBA-_qim7zixJZVD6vpwILnbB_94xmTk6EFU0urNf3dIXLsbxQsI3Bee3AhyurqBMWfu0Jg7w4Y8N58dyN9YplTKfZ-IBJ",
        "e7uqc6Q_8lmboi2cWpLmUxK-thqKCSGsAKiFwn8WGdNpsje7XMRJK0VGlD68TGgxklH63HgJPSnRzzt2FH-1jwxkuaMHrmmb",
        "dBKqyVl3lkl11fs9hvN87_uP6sMV9MwO-2kjJ420HKjgpM5DPdmh7LcFNGAmEW0nItIToogbB9X4I_qHBhYJW6Tz3kQs-Xnz",
        "67dBxMixJWQPxT184gknqCp1WMLvs_2E6sI-0NoNiEkQS-c82LotZQ",
    );

    #[test]
    fn rsa_keys_verify_rs256_and_rs384() {
        use base64::engine::general_purpose::STANDARD;
        let der = STANDARD.decode(RSA_PRIVATE_DER).unwrap();
        let jwk = json!({ "kty": "RSA", "n": RSA_MODULUS, "e": "AQAB" }).to_string();
        assert_eq!(check_public_jwk(&jwk), Ok(()));
        for algorithm in [Algorithm::RS256, Algorithm::RS384] {
            let assertion = jsonwebtoken::encode(
                &Header::new(algorithm),
                &claims("cl_1"),
                &EncodingKey::from_rsa_der(&der),
            )
            .unwrap();
            assert!(
                verify(&assertion, "cl_1", &jwk, AUDIENCE, now()).is_ok(),
                "{algorithm:?}"
            );
        }
        let (_, ec_jwk) = key();
        let assertion = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims("cl_1"),
            &EncodingKey::from_rsa_der(&der),
        )
        .unwrap();
        assert!(
            verify(&assertion, "cl_1", &ec_jwk, AUDIENCE, now()).is_err(),
            "an RSA signature never passes for an EC key"
        );
    }

    #[test]
    fn only_public_rsa_and_ec_keys_are_registered() {
        let (_, jwk) = key();
        assert_eq!(check_public_jwk(&jwk), Ok(()));
        let mut private: serde_json::Value = serde_json::from_str(&jwk).unwrap();
        private["d"] = json!("c2VjcmV0");
        assert!(check_public_jwk(&private.to_string())
            .unwrap_err()
            .contains("private member 'd'"));
        assert!(check_public_jwk(r#"{"kty":"oct","k":"c2VjcmV0"}"#).is_err());
        assert!(check_public_jwk("not json").is_err());
    }
}
