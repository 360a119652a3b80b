//! Service account authorized keys: an RSA-2048 pair made by `compute-gateway iam create-key`.
//! The store keeps the public half; the user gets the whole key as the JSON file the official
//! SDKs and `yc` read (`id`, `service_account_id`, `created_at`, `key_algorithm`,
//! `public_key`, `private_key` in PKCS#8 PEM).

use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

use crate::json::Timestamp;
use crate::store::ServiceAccountKey;

/// The authorized key file, as `yc iam key create --output` writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyFile {
    /// The key id (`kid` of the JWTs it signs).
    pub id: String,
    /// The service account (`iss`).
    pub service_account_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// `RSA_2048`.
    pub key_algorithm: String,
    /// SubjectPublicKeyInfo PEM.
    pub public_key: String,
    /// PKCS#8 PEM.
    pub private_key: String,
}

impl KeyFile {
    /// The part the server keeps.
    pub fn public(&self) -> ServiceAccountKey {
        ServiceAccountKey {
            id: self.id.clone(),
            service_account_id: self.service_account_id.clone(),
            created_at: self.created_at.clone(),
            key_algorithm: self.key_algorithm.clone(),
            public_key: self.public_key.clone(),
        }
    }
}

/// A new RSA-2048 key `id` for `service_account_id`.
pub fn generate_key(id: String, service_account_id: &str) -> Result<KeyFile, String> {
    let mut rng = getrandom::SysRng;
    let private =
        rsa::PrivateKey::new(&mut rng, 2048).map_err(|e| format!("cannot make an RSA key: {e}"))?;
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the private key: {e}"))?;
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok(KeyFile {
        id,
        service_account_id: service_account_id.to_string(),
        created_at: Timestamp::now().to_rfc3339().unwrap_or_default(),
        key_algorithm: "RSA_2048".into(),
        public_key: public_pem,
        private_key: private_pem.to_string(),
    })
}
