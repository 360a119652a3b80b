//! The JWT a service account signs to get an IAM token: `alg` PS256 (nothing else, and never
//! `none`), `kid` a stored key of the `iss` service account, `aud` the IAM token URL, and a
//! lifetime of at most an hour between `iat` and `exp`, with a minute of clock skew allowed
//! either way. The signature is checked by `jsonwebtoken` (RustCrypto's RSA-PSS).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::store::ServiceAccountKey;

/// The real API's IAM token URL: the Node.js SDK always signs for it.
pub const YANDEX_AUDIENCE: &str = "https://iam.api.cloud.yandex.net/iam/v1/tokens";
/// Longest JWT read (a PS256 JWT of the SDKs is under 1 KiB).
const MAX_JWT_BYTES: usize = 8 * 1024;
/// Clock skew allowed between the signer and this server, in seconds.
const SKEW: i64 = 60;
/// Longest lifetime of a JWT, `exp - iat`, in seconds.
const MAX_LIFETIME: i64 = 3600;

/// Which `aud` a JWT may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The real URL, or the one the Python SDK derives from the endpoint it was given,
    /// `https://iam.{endpoint}/iam/v1/tokens` (any endpoint: the SDK signs for the name the
    /// user dialled, which this server cannot know).
    Yandex,
    /// Exactly this one (`--iam-audience`).
    Pinned(String),
}

impl Audience {
    fn accepts(&self, aud: &str) -> bool {
        match self {
            Self::Pinned(want) => aud == want,
            Self::Yandex => {
                aud == YANDEX_AUDIENCE
                    || aud
                        .strip_prefix("https://iam.")
                        .and_then(|rest| rest.strip_suffix("/iam/v1/tokens"))
                        .is_some_and(|host| !host.is_empty() && !host.contains(['/', '?', '#']))
            }
        }
    }
}

/// Why a JWT is refused: the caller's mistake (UNAUTHENTICATED). The message names what is
/// wrong, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtError(pub String);

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse(why: impl Into<String>) -> JwtError {
    JwtError(why.into())
}

/// The key id a JWT names, read before its signature can be checked.
pub(crate) fn key_id(jwt: &str) -> Result<String, JwtError> {
    if jwt.len() > MAX_JWT_BYTES {
        return Err(refuse(format!(
            "the JWT is longer than {MAX_JWT_BYTES} bytes"
        )));
    }
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|e| refuse(format!("the JWT is malformed: {e}")))?;
    if header.alg != Algorithm::PS256 {
        return Err(refuse(format!(
            "the JWT must be signed with PS256, not {:?}",
            header.alg
        )));
    }
    header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or_else(|| refuse("the JWT has no kid (the authorized key's id)"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: Aud,
    iat: f64,
    exp: f64,
}

/// Checks a JWT signed with `key` at `now` (seconds since the epoch); the service account it
/// speaks for.
pub(crate) fn verify(
    jwt: &str,
    key: &ServiceAccountKey,
    audience: &Audience,
    now: i64,
) -> Result<String, JwtError> {
    let decoding = DecodingKey::from_rsa_pem(key.public_key.as_bytes())
        .map_err(|e| refuse(format!("key {} cannot verify signatures: {e}", key.id)))?;
    let mut validation = Validation::new(Algorithm::PS256);
    validation.leeway = SKEW as u64;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Claims>(jwt, &decoding, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => {
                    refuse("the JWT's signature does not verify with its key")
                }
                ErrorKind::ExpiredSignature => refuse("the JWT has expired"),
                ErrorKind::MissingRequiredClaim(c) => refuse(format!("the JWT has no {c} claim")),
                _ => refuse(format!("the JWT is invalid: {e}")),
            }
        })?
        .claims;
    if claims.iss != key.service_account_id {
        return Err(refuse(format!(
            "the JWT's iss is not the service account of key {}",
            key.id
        )));
    }
    let (iat, exp) = (claims.iat as i64, claims.exp as i64);
    if iat > now.saturating_add(SKEW) {
        return Err(refuse("the JWT's iat is in the future"));
    }
    if exp.saturating_sub(iat) > MAX_LIFETIME {
        return Err(refuse(
            "the JWT lives longer than an hour (exp - iat > 3600)",
        ));
    }
    let auds = match claims.aud {
        Aud::One(a) => vec![a],
        Aud::Many(a) => a,
    };
    if !auds.iter().any(|a| audience.accepts(a)) {
        return Err(refuse(match audience {
            Audience::Pinned(want) => format!("the JWT's aud must be {want}"),
            Audience::Yandex => format!("the JWT's aud must be {YANDEX_AUDIENCE}"),
        }));
    }
    Ok(claims.iss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_of_the_sdks_are_accepted_and_others_not() {
        let a = Audience::Yandex;
        assert!(a.accepts(YANDEX_AUDIENCE));
        assert!(a.accepts("https://iam.localhost:50051/iam/v1/tokens"));
        assert!(!a.accepts("https://iam./iam/v1/tokens"));
        assert!(!a.accepts("https://iam.evil/x/iam/v1/tokens"));
        assert!(!a.accepts("https://storage.api.cloud.yandex.net/iam/v1/tokens"));
        let pinned = Audience::Pinned("https://iam.example/iam/v1/tokens".into());
        assert!(pinned.accepts("https://iam.example/iam/v1/tokens"));
        assert!(!pinned.accepts(YANDEX_AUDIENCE));
    }

    #[test]
    fn a_header_that_is_not_ps256_with_a_kid_is_refused_before_any_key_is_read() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = |header: &str| format!("{}.{}.", b64(header), b64(r#"{"iss":"x"}"#));
        assert!(key_id(&jwt(r#"{"alg":"none","typ":"JWT"}"#)).is_err());
        let rs = key_id(&jwt(r#"{"alg":"RS256","kid":"k"}"#)).expect_err("RS256");
        assert!(rs.0.contains("PS256"), "{rs}");
        assert!(
            key_id(&jwt(r#"{"alg":"PS256"}"#))
                .expect_err("no kid")
                .0
                .contains("kid")
        );
        assert_eq!(
            key_id(&jwt(r#"{"alg":"PS256","kid":"ajk1"}"#)),
            Ok("ajk1".into())
        );
        assert!(key_id("not a jwt").is_err());
        assert!(key_id(&"a".repeat(MAX_JWT_BYTES + 1)).is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends as a JWT, checking it never panics: raw text, and three
        /// base64url parts of any JSON-ish bytes.
        #[test]
        fn no_jwt_makes_the_check_panic(
            text in ".{0,300}",
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
            alg in proptest::sample::select(vec!["PS256", "RS256", "none", "HS256", ""]),
            iat in proptest::num::f64::ANY,
            exp in proptest::num::f64::ANY,
            now in proptest::num::i64::ANY,
        ) {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            static KEY: std::sync::LazyLock<crate::iam::KeyFile> = std::sync::LazyLock::new(|| {
                crate::iam::generate_key("ajk".into(), "aje").expect("a key")
            });
            let public = KEY.public();
            let key = &public;
            let _ = key_id(&text);
            let _ = verify(&text, key, &Audience::Yandex, 0);
            let shaped = format!(
                "{}.{}.{}",
                b64.encode(format!(r#"{{"alg":"{alg}","kid":"ajk"}}"#)),
                b64.encode(&payload),
                b64.encode(&header)
            );
            let _ = key_id(&shaped);
            let _ = verify(&shaped, key, &Audience::Yandex, 0);
            // Validly signed, with claims of any value and type.
            let mut jwt_header = jsonwebtoken::Header::new(Algorithm::PS256);
            jwt_header.kid = Some("ajk".into());
            let claims = serde_json::json!({
                "iss": if iat.is_finite() { serde_json::json!("aje") } else { serde_json::json!(text) },
                "aud": if payload.len() % 2 == 0 { serde_json::json!(text) } else { serde_json::json!([YANDEX_AUDIENCE, 1]) },
                "iat": iat,
                "exp": exp,
            });
            let signing = jsonwebtoken::EncodingKey::from_rsa_pem(KEY.private_key.as_bytes())
                .expect("PEM");
            if let Ok(signed) = jsonwebtoken::encode(&jwt_header, &claims, &signing) {
                let _ = verify(&signed, key, &Audience::Yandex, now);
            }
        }
    }
}
