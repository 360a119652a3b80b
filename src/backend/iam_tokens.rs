//! `yandex.cloud.iam.v1.IamTokenService`: Create (for a service account's JWT, or an OAuth
//! token the config lists), CreateForServiceAccount (a service account acting as itself; this
//! server keeps no roles on service accounts, so no one may impersonate another), and Revoke.
//! Also the authorized keys the `iam` commands make, list and delete in the store.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller_of;
use super::ids::{KEY_ID_PREFIX, new_id};
use super::state::Backend;
use super::storage;
use super::tokens::{Caller, Subject};
use super::validate;
use crate::iam::{AuthMode, KeyFile, generate_key};
use crate::pb::yandex::cloud::iam::v1::iam_token_service_server::IamTokenService;
use crate::pb::yandex::cloud::iam::v1::{
    CreateIamTokenForServiceAccountRequest, CreateIamTokenRequest, CreateIamTokenResponse,
    RevokeIamTokenRequest, RevokeIamTokenResponse, create_iam_token_request::Identity,
};
use crate::store::{ServiceAccountKey, Store, StoreError};

/// The IamTokenService implementation.
pub(super) struct IamTokens(pub(super) Backend);

#[tonic::async_trait]
impl IamTokenService for IamTokens {
    async fn create(
        &self,
        req: Request<CreateIamTokenRequest>,
    ) -> Result<Response<CreateIamTokenResponse>, Status> {
        let tokens = &self.0.access().tokens;
        let r = req.into_inner();
        validate::validate_create_token(&r)?;
        let subject = match r.identity {
            Some(Identity::Jwt(jwt)) => tokens.subject_of_jwt(&jwt)?,
            Some(Identity::YandexPassportOauthToken(t)) => tokens.subject_of_oauth(&t)?,
            None => unreachable!("validate_create_token requires an identity"),
        };
        let (iam_token, expires_at) = tokens.issue(subject).await?;
        Ok(Response::new(CreateIamTokenResponse {
            iam_token,
            expires_at: Some(expires_at),
        }))
    }

    async fn create_for_service_account(
        &self,
        req: Request<CreateIamTokenForServiceAccountRequest>,
    ) -> Result<Response<CreateIamTokenResponse>, Status> {
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate::validate_service_account_id(&r.service_account_id)?;
        let acts_as_itself = matches!(&caller, Caller::Subject(s) if s.id == r.service_account_id);
        if self.0.access().mode == AuthMode::Iam && !acts_as_itself {
            return Err(Status::permission_denied(format!(
                "permission iam.serviceAccounts.tokens.create is required on service account {}",
                r.service_account_id
            )));
        }
        let subject = Subject {
            id: r.service_account_id,
            kind: "serviceAccount",
        };
        let (iam_token, expires_at) = self.0.access().tokens.issue(subject).await?;
        Ok(Response::new(CreateIamTokenResponse {
            iam_token,
            expires_at: Some(expires_at),
        }))
    }

    async fn revoke(
        &self,
        req: Request<RevokeIamTokenRequest>,
    ) -> Result<Response<RevokeIamTokenResponse>, Status> {
        let r = req.into_inner();
        validate::validate_iam_token(&r.iam_token)?;
        let subject = self.0.access().tokens.revoke(&r.iam_token).await?;
        Ok(Response::new(RevokeIamTokenResponse {
            subject_id: subject.id,
        }))
    }
}

/// A service account id as the API shapes them: 1 to 50 letters, digits, `-` or `_`.
fn check_service_account_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 50
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "--service-account-id {id:?}: expected 1 to 50 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// Makes an authorized key for `service_account_id`, keeps its public half in `store`
/// (durably, before it returns) and returns the whole key file.
pub async fn create_key(
    store: Arc<dyn Store>,
    service_account_id: &str,
) -> Result<KeyFile, String> {
    check_service_account_id(service_account_id)?;
    let id = new_id(KEY_ID_PREFIX);
    let sa = service_account_id.to_string();
    // RSA key generation takes a while: off the async threads.
    let key = tokio::task::spawn_blocking(move || generate_key(id, &sa))
        .await
        .map_err(|e| format!("key generation failed: {e}"))??;
    let public = key.public();
    storage::write(&*store, move |tx| tx.put_service_account_key(&public))
        .await
        .map_err(|e: StoreError| e.to_string())?;
    Ok(key)
}

/// Every stored key (public halves), by id.
pub fn list_keys(store: &dyn Store) -> Result<Vec<ServiceAccountKey>, String> {
    storage::read(store, |tx| tx.service_account_keys()).map_err(|e: StoreError| e.to_string())
}

/// Deletes a key: JWTs it signs are refused from then on (tokens already issued stay valid
/// until they expire or are revoked, as with the real API). Whether there was one.
pub async fn delete_key(store: Arc<dyn Store>, id: &str) -> Result<bool, String> {
    let id = id.to_string();
    storage::write(&*store, move |tx| tx.delete_service_account_key(&id))
        .await
        .map_err(|e: StoreError| e.to_string())
}
