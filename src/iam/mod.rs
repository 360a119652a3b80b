//! Identity and access, as the real API does it: IAM tokens (`t1.…`) issued by
//! `IamTokenService.Create` for a JWT signed with a service account's authorized key (or for an
//! OAuth token the config lists), sent as `Authorization: Bearer <token>`, and a permission
//! per RPC granted by roles bound on the folder (from the config file) or on the image itself
//! (its access bindings).
//!
//! The parts here are free of the server: authorized keys and their JSON file (`keys.rs`), the
//! JWT check (`jwt.rs`), and the roles, the permission of every RPC and the config file
//! (`policy.rs`). The backend issues and checks tokens over its store (`backend/tokens.rs`)
//! and applies all of it to every call in one layer (`backend/auth.rs`).

pub(crate) mod jwt;
pub mod keys;
pub(crate) mod policy;

pub use jwt::{Audience, JwtError, YANDEX_AUDIENCE};
pub use keys::{KeyFile, generate_key};
pub use policy::{AuthMode, IamConfig, Permission, Role, allows, permission_of};
