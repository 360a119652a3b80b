//! IAM (`--auth iam`): service account keys made as `iam create-key` makes them, JWTs
//! exchanged for IAM tokens, every RPC on both ports against every kind of caller, the JWT
//! checks, revocation, OAuth tokens from the config, and what stays open.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::TestServer;
use compute_gateway::backend::{self, AuthConfig, RateLimit};
use compute_gateway::iam::{Audience, AuthMode, IamConfig, KeyFile, YANDEX_AUDIENCE};
use compute_gateway::pb::yandex::cloud::access::*;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::iam::v1::iam_token_service_client::IamTokenServiceClient;
use compute_gateway::pb::yandex::cloud::iam::v1::{
    CreateIamTokenForServiceAccountRequest, CreateIamTokenRequest, RevokeIamTokenRequest,
    create_iam_token_request::Identity,
};
use compute_gateway::pb::yandex::cloud::operation::{
    CancelOperationRequest, GetOperationRequest, Operation,
};
use compute_gateway::store::{
    Commit, EmbeddedStore, IssuedToken, Store, StoreError, TxMut, WriteJob,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::{Code, Request};

const F: &str = "b1gfolderf";
const G: &str = "b1gfolderg";
const EXPIRED: &str = "t1.expired.token";

/// Kinds of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Nobody,
    BadToken,
    Expired,
    Revoked,
    Viewer,
    Editor,
    Admin,
    /// An editor binding on image A only, none on the folder.
    ImageOnly,
    /// An editor of folder G, nothing in F.
    OtherFolder,
}

const EVERYONE: [Who; 9] = [
    Who::Nobody,
    Who::BadToken,
    Who::Expired,
    Who::Revoked,
    Who::Viewer,
    Who::Editor,
    Who::Admin,
    Who::ImageOnly,
    Who::OtherFolder,
];

fn service_account(who: Who) -> &'static str {
    match who {
        Who::Viewer => "ajeviewer",
        Who::Editor => "ajeeditor",
        Who::Admin => "ajeadmin",
        Who::ImageOnly => "ajeimageonly",
        Who::OtherFolder => "ajeother",
        Who::Revoked => "ajerevoked",
        _ => "",
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A JWT as the SDKs sign it, with `edit` applied to the claims first.
fn jwt(key: &KeyFile, edit: impl FnOnce(&mut Value)) -> String {
    // One reading of the clock: two could straddle a second and make the JWT 3601 s long.
    let iat = now();
    let mut claims = json!({
        "iss": key.service_account_id,
        "aud": YANDEX_AUDIENCE,
        "iat": iat,
        "exp": iat + 3600,
    });
    edit(&mut claims);
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some(key.id.clone());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key.private_key.as_bytes()).expect("PEM"),
    )
    .expect("sign")
}

/// Writes one expired token record, as a token issued 12 hours ago would be.
struct PutExpired(Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>);

impl WriteJob for PutExpired {
    fn run(&mut self, tx: &mut dyn TxMut) -> Commit {
        let hash: String = ring::digest::digest(&ring::digest::SHA256, EXPIRED.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let record = IssuedToken {
            subject_id: "ajeeditor".into(),
            subject_type: "serviceAccount".into(),
            expires_nanos: (now() as u64 - 60) * 1_000_000_000,
            revoked: false,
        };
        match tx.put_issued_token(&hash, &record) {
            Ok(()) => Commit::Yes,
            Err(_) => Commit::No,
        }
    }
    fn finish(mut self: Box<Self>, committed: Result<(), StoreError>) {
        if let Some(reply) = self.0.take() {
            let _ = reply.send(committed);
        }
    }
}

struct World {
    s: TestServer,
    keys: HashMap<Who, KeyFile>,
    tokens: HashMap<Who, String>,
    /// Image A in folder F; the ImageOnly account is an editor of it.
    image: String,
    /// A done Operation on A, made by the admin.
    operation: String,
    _dir: tempfile::TempDir,
}

fn authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    r
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mut keys = HashMap::new();
        {
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
            for who in EVERYONE {
                let sa = service_account(who);
                if !sa.is_empty() {
                    let key = backend::create_key(store.clone(), sa).await.expect("key");
                    keys.insert(who, key);
                }
            }
            let (reply, done) = tokio::sync::oneshot::channel();
            store.submit(Box::new(PutExpired(Some(reply))));
            done.await.expect("job").expect("commit");
        }
        let binding = |role: &str, who: Who| json!({"roleId": role, "subject": {"id": service_account(who), "type": "serviceAccount"}});
        let config = json!({
            "folderBindings": {
                F: [binding("viewer", Who::Viewer), binding("compute.editor", Who::Editor), binding("admin", Who::Admin), binding("editor", Who::Revoked)],
                G: [binding("editor", Who::OtherFolder)],
            },
            "oauthTokens": {"y0_oauth_user": "ajeuser"},
        });
        let path = dir.path().join("iam.json");
        std::fs::write(&path, config.to_string()).expect("write config");
        let s = TestServer::start_in(
            dir.path(),
            common::Options {
                create_delay: std::time::Duration::from_millis(1),
                auth: AuthConfig {
                    mode: AuthMode::Iam,
                    config: Arc::new(IamConfig::load(&path).expect("config")),
                    audience: Audience::Yandex,
                    rate_limit: None,
                },
                ..Default::default()
            },
        )
        .await;
        let mut iam = IamTokenServiceClient::new(s.channel());
        let mut tokens = HashMap::new();
        for (who, key) in &keys {
            let r = iam
                .create(CreateIamTokenRequest {
                    identity: Some(Identity::Jwt(jwt(key, |_| {}))),
                })
                .await
                .expect("exchange")
                .into_inner();
            assert!(r.iam_token.starts_with("t1."), "{}", r.iam_token);
            let expires = r.expires_at.expect("expires_at").seconds;
            assert!((expires - now() - 12 * 3600).abs() < 60, "12 hours");
            tokens.insert(*who, r.iam_token);
        }
        tokens.insert(Who::BadToken, "t1.not.issued".into());
        tokens.insert(Who::Expired, EXPIRED.into());
        let revoked = iam
            .revoke(RevokeIamTokenRequest {
                iam_token: tokens[&Who::Revoked].clone(),
            })
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(revoked.subject_id, "ajerevoked");
        let mut w = Self {
            s,
            keys,
            tokens,
            image: String::new(),
            operation: String::new(),
            _dir: dir,
        };
        w.image = w.create_as(Who::Admin, "image-a").await;
        let op =
            w.s.images()
                .set_access_bindings(authed(
                    SetAccessBindingsRequest {
                        resource_id: w.image.clone(),
                        access_bindings: vec![image_only_binding()],
                    },
                    w.token(Who::Admin),
                ))
                .await
                .expect("bind")
                .into_inner();
        assert_eq!(op.created_by, "ajeadmin", "created_by is the subject");
        w.operation = op.id;
        w
    }

    fn token(&self, who: Who) -> Option<&str> {
        self.tokens.get(&who).map(String::as_str)
    }

    /// A READY image in F, made by `who`.
    async fn create_as(&self, who: Who, name: &str) -> String {
        let op = self
            .s
            .images()
            .create(authed(
                CreateImageRequest {
                    folder_id: F.into(),
                    name: name.into(),
                    family: "fam".into(),
                    source: Some(create_image_request::Source::DiskId("d".into())),
                    ..Default::default()
                },
                self.token(who),
            ))
            .await
            .expect("create")
            .into_inner();
        self.wait(&op, who).await;
        let meta: CreateImageMetadata = common::unpack(op.metadata.as_ref().expect("metadata"));
        meta.image_id
    }

    async fn wait(&self, op: &Operation, who: Who) {
        let mut ops = self.s.operations();
        loop {
            let got = ops
                .get(authed(
                    GetOperationRequest {
                        operation_id: op.id.clone(),
                    },
                    self.token(who),
                ))
                .await
                .expect("get operation")
                .into_inner();
            if got.done {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

fn image_only_binding() -> AccessBinding {
    AccessBinding {
        role_id: "editor".into(),
        subject: Some(Subject {
            id: service_account(Who::ImageOnly).into(),
            r#type: "serviceAccount".into(),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Get,
    GetLatest,
    List,
    Create,
    Update,
    Delete,
    ListOperations,
    ListBindings,
    SetBindings,
    UpdateBindings,
    OperationGet,
    OperationCancel,
}

const RPCS: [Rpc; 12] = [
    Rpc::Get,
    Rpc::GetLatest,
    Rpc::List,
    Rpc::Create,
    Rpc::Update,
    Rpc::Delete,
    Rpc::ListOperations,
    Rpc::ListBindings,
    Rpc::SetBindings,
    Rpc::UpdateBindings,
    Rpc::OperationGet,
    Rpc::OperationCancel,
];

/// The code a caller gets, by the roles the config and the image's bindings give: the
/// expected table, written out.
fn expected(rpc: Rpc, who: Who) -> Code {
    use Rpc::*;
    let (read, write, admin) = match who {
        Who::Nobody | Who::BadToken | Who::Expired | Who::Revoked => {
            return Code::Unauthenticated;
        }
        Who::Viewer => (true, false, false),
        Who::Editor => (true, true, false),
        Who::Admin => (true, true, true),
        Who::OtherFolder => (false, false, false),
        // Roles on image A only: what targets A works; nothing folder-wide, and nothing on
        // the fresh image Delete targets.
        Who::ImageOnly => {
            return match rpc {
                Get | Update | ListOperations | ListBindings | OperationGet => Code::Ok,
                OperationCancel => Code::FailedPrecondition,
                _ => Code::PermissionDenied,
            };
        }
    };
    let allowed = match rpc {
        Get | GetLatest | List | ListOperations | ListBindings | OperationGet => read,
        Create | Update | Delete | OperationCancel => write,
        SetBindings | UpdateBindings => admin,
    };
    match (allowed, rpc) {
        (false, _) => Code::PermissionDenied,
        // The Operation is done: the caller may cancel, but there is nothing to cancel.
        (true, OperationCancel) => Code::FailedPrecondition,
        (true, _) => Code::Ok,
    }
}

/// Makes one call over gRPC; its code. `victim` is a fresh image for Delete.
async fn grpc_call(w: &World, rpc: Rpc, who: Who, victim: &str) -> Code {
    let t = w.token(who).filter(|_| who != Who::Nobody);
    let (mut images, mut ops) = (w.s.images(), w.s.operations());
    let a = w.image.clone();
    let result = match rpc {
        Rpc::Get => images
            .get(authed(GetImageRequest { image_id: a }, t))
            .await
            .map(|_| ()),
        Rpc::GetLatest => images
            .get_latest_by_family(authed(
                GetImageLatestByFamilyRequest {
                    folder_id: F.into(),
                    family: "fam".into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::List => images
            .list(authed(
                ListImagesRequest {
                    folder_id: F.into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::Create => images
            .create(authed(
                CreateImageRequest {
                    folder_id: F.into(),
                    source: Some(create_image_request::Source::DiskId("d".into())),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::Update => images
            .update(authed(
                UpdateImageRequest {
                    image_id: a,
                    update_mask: Some(compute_gateway::json::FieldMask {
                        paths: vec!["description".into()],
                    }),
                    description: format!("{who:?}"),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::Delete => images
            .delete(authed(
                DeleteImageRequest {
                    image_id: victim.into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::ListOperations => images
            .list_operations(authed(
                ListImageOperationsRequest {
                    image_id: a,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::ListBindings => images
            .list_access_bindings(authed(
                ListAccessBindingsRequest {
                    resource_id: a,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::SetBindings => images
            .set_access_bindings(authed(
                SetAccessBindingsRequest {
                    resource_id: a,
                    access_bindings: vec![image_only_binding()],
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::UpdateBindings => images
            .update_access_bindings(authed(
                UpdateAccessBindingsRequest {
                    resource_id: a,
                    access_binding_deltas: vec![AccessBindingDelta {
                        action: AccessBindingAction::Add as i32,
                        access_binding: Some(image_only_binding()),
                    }],
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::OperationGet => ops
            .get(authed(
                GetOperationRequest {
                    operation_id: w.operation.clone(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        Rpc::OperationCancel => ops
            .cancel(authed(
                CancelOperationRequest {
                    operation_id: w.operation.clone(),
                },
                t,
            ))
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => {
            if matches!(
                status.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ) {
                assert!(
                    !status.message().contains("t1."),
                    "a refusal never shows the token: {status:?}"
                );
            }
            if status.code() == Code::PermissionDenied {
                assert!(
                    status.message().contains("permission compute."),
                    "the message names the permission: {status:?}"
                );
            }
            status.code()
        }
    }
}

/// Makes one call over REST; its HTTP status.
async fn rest_call(w: &World, rpc: Rpc, who: Who, victim: &str) -> u16 {
    let http = reqwest::Client::new();
    let base = w.s.http();
    let a = &w.image;
    let op = &w.operation;
    let request = match rpc {
        Rpc::Get => http.get(format!("{base}/compute/v1/images/{a}")),
        Rpc::GetLatest => http.get(format!(
            "{base}/compute/v1/images:latestByFamily?folderId={F}&family=fam"
        )),
        Rpc::List => http.get(format!("{base}/compute/v1/images?folderId={F}")),
        Rpc::Create => http
            .post(format!("{base}/compute/v1/images"))
            .json(&json!({"folderId": F, "diskId": "d"})),
        Rpc::Update => http
            .patch(format!("{base}/compute/v1/images/{a}"))
            .json(&json!({"updateMask": "description", "description": "rest"})),
        Rpc::Delete => http.delete(format!("{base}/compute/v1/images/{victim}")),
        Rpc::ListOperations => http.get(format!("{base}/compute/v1/images/{a}/operations")),
        Rpc::ListBindings => http.get(format!("{base}/compute/v1/images/{a}:listAccessBindings")),
        Rpc::SetBindings => http
            .post(format!("{base}/compute/v1/images/{a}:setAccessBindings"))
            .json(&json!({"accessBindings": [{"roleId": "editor", "subject": {"id": service_account(Who::ImageOnly), "type": "serviceAccount"}}]})),
        Rpc::UpdateBindings => http
            .post(format!("{base}/compute/v1/images/{a}:updateAccessBindings"))
            .json(&json!({"accessBindingDeltas": [{"action": "ADD", "accessBinding": {"roleId": "editor", "subject": {"id": service_account(Who::ImageOnly), "type": "serviceAccount"}}}]})),
        Rpc::OperationGet => http.get(format!("{base}/operations/{op}")),
        Rpc::OperationCancel => http.get(format!("{base}/operations/{op}:cancel")),
    };
    let request = match w.token(who).filter(|_| who != Who::Nobody) {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    let reply = request.send().await.expect("send");
    let status = reply.status().as_u16();
    if status >= 400 {
        let body: Value = reply.json().await.expect("a Status body");
        assert!(body["code"].is_number(), "{body}");
    }
    status
}

fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::FailedPrecondition => 400,
        other => panic!("no status for {other:?} in this table"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_on_both_ports_answers_every_kind_of_caller_as_its_roles_allow() {
    let w = World::new().await;
    let mut wrong = Vec::new();
    for rpc in RPCS {
        for who in EVERYONE {
            let want = expected(rpc, who);
            let victim = if rpc == Rpc::Delete {
                w.create_as(Who::Admin, "").await
            } else {
                String::new()
            };
            let got = grpc_call(&w, rpc, who, &victim).await;
            if got != want {
                wrong.push(format!("gRPC {rpc:?} as {who:?}: {got:?}, want {want:?}"));
            }
            let victim = if rpc == Rpc::Delete {
                w.create_as(Who::Admin, "").await
            } else {
                String::new()
            };
            let got = rest_call(&w, rpc, who, &victim).await;
            if got != http_status(want) {
                wrong.push(format!(
                    "REST {rpc:?} as {who:?}: {got}, want {}",
                    http_status(want)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The JWTs that must not get a token, each UNAUTHENTICATED with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwts_are_refused() {
    use base64::Engine as _;
    let w = World::new().await;
    let key = &w.keys[&Who::Editor];
    let other = &w.keys[&Who::Viewer];
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let good = jwt(key, |_| {});
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    payload["iss"] = json!("ajeadmin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    );
    let wrong_key = {
        // Signed by another account's key, under this key's id.
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some(key.id.clone());
        let claims = json!({"iss": key.service_account_id, "aud": YANDEX_AUDIENCE, "iat": now(), "exp": now() + 600});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(other.private_key.as_bytes()).expect("pem"),
        )
        .expect("sign")
    };
    let rs256 = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.id.clone());
        let claims = json!({"iss": key.service_account_id, "aud": YANDEX_AUDIENCE, "iat": now(), "exp": now() + 600});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(key.private_key.as_bytes()).expect("pem"),
        )
        .expect("sign")
    };
    let none = format!(
        "{}.{}.",
        b64.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.id
        )),
        parts[1]
    );
    let unknown_kid = {
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some("ajknosuchkey".into());
        let claims = json!({"iss": key.service_account_id, "aud": YANDEX_AUDIENCE, "iat": now(), "exp": now() + 600});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(key.private_key.as_bytes()).expect("pem"),
        )
        .expect("sign")
    };
    let cases = [
        ("wrong key", wrong_key, "signature"),
        ("RS256", rs256, "PS256"),
        ("alg none", none, "JWT"),
        (
            "expired",
            jwt(key, |c| {
                c["iat"] = json!(now() - 7200);
                c["exp"] = json!(now() - 3600);
            }),
            "expired",
        ),
        (
            "iat in the future",
            jwt(key, |c| {
                c["iat"] = json!(now() + 3600);
                c["exp"] = json!(now() + 3700);
            }),
            "future",
        ),
        (
            "longer than an hour",
            jwt(key, |c| c["exp"] = json!(now() + 7200)),
            "hour",
        ),
        (
            "wrong aud",
            jwt(key, |c| {
                c["aud"] = json!("https://storage.yandexcloud.net/")
            }),
            "aud",
        ),
        (
            "iss of another account",
            jwt(key, |c| c["iss"] = json!("ajeadmin")),
            "iss",
        ),
        ("tampered payload", tampered, "signature"),
        ("unknown kid", unknown_kid, "unknown"),
        ("not a JWT", "not.a.jwt".to_string(), "JWT"),
    ];
    let mut iam = IamTokenServiceClient::new(w.s.channel());
    for (what, jwt, reason) in cases {
        let err = iam
            .create(CreateIamTokenRequest {
                identity: Some(Identity::Jwt(jwt)),
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert!(err.message().contains(reason), "{what}: {err:?}");
    }
    // The Python SDK's audience, derived from the endpoint it was given, is accepted.
    let sdk = jwt(key, |c| {
        c["aud"] = json!("https://iam.localhost:50051/iam/v1/tokens")
    });
    iam.create(CreateIamTokenRequest {
        identity: Some(Identity::Jwt(sdk)),
    })
    .await
    .expect("the SDK's form of aud");
    let empty = iam
        .create(CreateIamTokenRequest { identity: None })
        .await
        .expect_err("no identity");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_rest_oauth_tokens_revocation_and_the_open_services() {
    let w = World::new().await;
    let http = reqwest::Client::new();
    let base = w.s.http();
    // The token exchange over REST, in the API's JSON.
    let reply = http
        .post(format!("{base}/iam/v1/tokens"))
        .json(&json!({"jwt": jwt(&w.keys[&Who::Viewer], |_| {})}))
        .send()
        .await
        .expect("exchange");
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.expect("json");
    let token = body["iamToken"].as_str().expect("iamToken").to_string();
    assert!(
        body["expiresAt"]
            .as_str()
            .expect("expiresAt")
            .ends_with('Z')
    );
    let list = |t: Option<String>| {
        let r = http.get(format!("{base}/compute/v1/images?folderId={F}"));
        match t {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    assert_eq!(list(Some(token.clone())).await.expect("list").status(), 200);
    let missing = list(None).await.expect("list");
    assert_eq!(missing.status(), 401);
    let status: Value = missing.json().await.expect("Status");
    assert_eq!(status["code"], 16);

    // An OAuth token the config lists is a user account; others are refused.
    let mut iam = IamTokenServiceClient::new(w.s.channel());
    let user = iam
        .create(CreateIamTokenRequest {
            identity: Some(Identity::YandexPassportOauthToken("y0_oauth_user".into())),
        })
        .await
        .expect("listed OAuth token")
        .into_inner();
    let denied = list(Some(user.iam_token.clone())).await.expect("list");
    assert_eq!(denied.status(), 403, "no role for the user account");
    let unknown = iam
        .create(CreateIamTokenRequest {
            identity: Some(Identity::YandexPassportOauthToken("y0_unknown".into())),
        })
        .await
        .expect_err("unlisted OAuth token");
    assert_eq!(unknown.code(), Code::Unauthenticated);

    // Revoked: refused from then on, over REST too; revoking again is refused.
    let revoked = http
        .post(format!("{base}/iam/v1/tokens:revoke"))
        .json(&json!({"iamToken": token}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let body: Value = revoked.json().await.expect("json");
    assert_eq!(body["subjectId"], "ajeviewer");
    assert_eq!(list(Some(token.clone())).await.expect("list").status(), 401);
    let again = iam
        .revoke(RevokeIamTokenRequest { iam_token: token })
        .await
        .expect_err("revoked twice");
    assert_eq!(again.code(), Code::Unauthenticated);

    // A service account may get a token for itself, not for another.
    let editor = w.token(Who::Editor).expect("token");
    let own = iam
        .create_for_service_account(authed(
            CreateIamTokenForServiceAccountRequest {
                service_account_id: "ajeeditor".into(),
            },
            Some(editor),
        ))
        .await
        .expect("itself")
        .into_inner();
    assert!(own.iam_token.starts_with("t1."));
    let other = iam
        .create_for_service_account(authed(
            CreateIamTokenForServiceAccountRequest {
                service_account_id: "ajeadmin".into(),
            },
            Some(editor),
        ))
        .await
        .expect_err("another account");
    assert_eq!(other.code(), Code::PermissionDenied);
    let anonymous = iam
        .create_for_service_account(CreateIamTokenForServiceAccountRequest {
            service_account_id: "ajeadmin".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // Health, endpoint discovery and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(w.s.channel());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is open");
    let mut endpoints = compute_gateway::pb::yandex::cloud::endpoint::api_endpoint_service_client::ApiEndpointServiceClient::new(w.s.channel());
    endpoints
        .list(compute_gateway::pb::yandex::cloud::endpoint::ListApiEndpointsRequest::default())
        .await
        .expect("endpoint discovery is open");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
}

/// Deleting a key refuses the JWTs it signs from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_signs_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let key = backend::create_key(store.clone(), "ajesa")
        .await
        .expect("key");
    assert_eq!(key.key_algorithm, "RSA_2048");
    assert!(
        key.private_key.contains("BEGIN PRIVATE KEY"),
        "PKCS#8, as the SDKs expect"
    );
    assert!(key.public_key.contains("BEGIN PUBLIC KEY"));
    let listed = backend::list_keys(&*store).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, key.id);
    assert!(backend::create_key(store.clone(), "bad id!").await.is_err());
    assert!(
        backend::delete_key(store.clone(), &key.id)
            .await
            .expect("delete")
    );
    assert!(
        !backend::delete_key(store.clone(), &key.id)
            .await
            .expect("again")
    );
    drop(store);
    let s = TestServer::start_in(dir.path(), common::Options::default()).await;
    let err = IamTokenServiceClient::new(s.channel())
        .create(CreateIamTokenRequest {
            identity: Some(Identity::Jwt(jwt(&key, |_| {}))),
        })
        .await
        .expect_err("deleted key");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("unknown or deleted"), "{err:?}");
}

/// The delay a RESOURCE_EXHAUSTED's RetryInfo names.
fn retry_delay(status: &tonic::Status) -> std::time::Duration {
    let details =
        <compute_gateway::pb::google::rpc::Status as prost::Message>::decode(status.details())
            .expect("details");
    let info: compute_gateway::pb::google::rpc::RetryInfo = common::unpack(&details.details[0]);
    let delay = info.retry_delay.expect("retry_delay");
    std::time::Duration::new(delay.seconds as u64, delay.nanos as u32)
}

/// `--rate-limit`: each caller (a subject, or an address without a token) has its own rate; past
/// it a call is RESOURCE_EXHAUSTED with a RetryInfo (429 with Retry-After over REST), and after
/// the time it names the caller is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_each_caller_apart_and_say_when_to_retry() {
    let dir = tempfile::tempdir().expect("dir");
    let (first, second) = {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
        (
            backend::create_key(store.clone(), "ajefirst")
                .await
                .expect("key"),
            backend::create_key(store, "ajesecond").await.expect("key"),
        )
    };
    let one = std::num::NonZeroU32::new(1).expect("1");
    let s = TestServer::start_in(
        dir.path(),
        common::Options {
            auth: AuthConfig {
                rate_limit: Some(RateLimit {
                    per_second: std::num::NonZeroU32::new(20).expect("20"),
                    burst: one,
                }),
                ..AuthConfig::default()
            },
            ..Default::default()
        },
    )
    .await;
    let iam = IamTokenServiceClient::new(s.channel());
    // The exchanges are counted too (anonymous, by address): a client waits as it is told.
    let token = |key: &KeyFile| {
        let jwt = jwt(key, |_| {});
        let mut iam = iam.clone();
        async move {
            loop {
                let request = CreateIamTokenRequest {
                    identity: Some(Identity::Jwt(jwt.clone())),
                };
                match iam.create(request).await {
                    Ok(r) => return r.into_inner().iam_token,
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        tokio::time::sleep(retry_delay(&status)).await;
                    }
                    Err(status) => panic!("token: {status:?}"),
                }
            }
        }
    };
    let (a, b) = (token(&first).await, token(&second).await);
    let list = |t: &str| {
        let mut images = s.images();
        let request = authed(
            ListImagesRequest {
                folder_id: F.into(),
                ..Default::default()
            },
            Some(t),
        );
        async move { images.list(request).await }
    };
    // A burst of one: the first call goes, the next at once is over the rate.
    let mut limited = None;
    for _ in 0..3 {
        if let Err(status) = list(&a).await {
            limited = Some(status);
            break;
        }
    }
    let status = limited.expect("over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("20 calls per second"),
        "{status:?}"
    );
    let wait = retry_delay(&status);
    assert!(wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_millis(50));
    // Another subject is counted apart.
    list(&b).await.expect("another caller");
    // After the time the server named, the caller is served again.
    tokio::time::sleep(wait).await;
    list(&a).await.expect("served again");

    // Over REST: 429, the Status body, and Retry-After in whole seconds.
    let http = reqwest::Client::new();
    let mut seen = None;
    for _ in 0..3 {
        let reply = http
            .get(format!("{}/compute/v1/images?folderId={F}", s.http()))
            .send()
            .await
            .expect("list");
        if reply.status() == 429 {
            seen = Some(reply);
            break;
        }
        assert_eq!(reply.status(), 200);
    }
    let reply = seen.expect("REST over the rate");
    assert_eq!(reply.headers()["retry-after"], "1");
    let body: Value = reply.json().await.expect("Status");
    assert_eq!(body["code"], 8);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
}
