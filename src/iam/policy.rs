//! Who may do what. Every RPC needs one permission (the table is [`permission_of`]); a role
//! grants a set of permissions, as the real role reference has them: `viewer` ⊂ `editor` ⊂
//! `admin`, the same three under `compute.`, and `compute.images.user` (read one image, find
//! the latest of a family). Roles come from the folder's bindings (the config file) and from
//! the image's own access bindings (SetAccessBindings), which now take effect.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::pb::yandex::cloud::access::AccessBinding;

/// Whether calls need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone may do anything (a warning says so at start). Tokens are still issued and, when
    /// valid, name the caller (`created_by`).
    None,
    /// Every call needs a valid IAM token and the permission its RPC needs.
    Iam,
}

/// What an RPC does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read one image.
    ImagesGet,
    /// List a folder's images.
    ImagesList,
    /// Find the latest image of a family in a folder.
    ImagesGetLatest,
    /// Create an image in a folder.
    ImagesCreate,
    /// Change an image.
    ImagesUpdate,
    /// Delete an image.
    ImagesDelete,
    /// Read an image's operations.
    ImagesListOperations,
    /// Read an image's access bindings.
    ImagesListAccessBindings,
    /// Change an image's access bindings.
    ImagesSetAccessBindings,
    /// Read an operation (of a resource one may read).
    OperationsGet,
    /// Cancel an operation (of a resource one may change).
    OperationsCancel,
}

impl Permission {
    /// Its name, as error messages show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ImagesGet => "compute.images.get",
            Self::ImagesList => "compute.images.list",
            Self::ImagesGetLatest => "compute.images.getLatestByFamily",
            Self::ImagesCreate => "compute.images.create",
            Self::ImagesUpdate => "compute.images.update",
            Self::ImagesDelete => "compute.images.delete",
            Self::ImagesListOperations => "compute.images.listOperations",
            Self::ImagesListAccessBindings => "compute.images.listAccessBindings",
            Self::ImagesSetAccessBindings => "compute.images.setAccessBindings",
            Self::OperationsGet => "compute.operations.get",
            Self::OperationsCancel => "compute.operations.cancel",
        }
    }
}

/// The permission each RPC of the protected services needs, by its full gRPC path. A method
/// missing here is refused, never let through.
pub fn permission_of(path: &str) -> Option<Permission> {
    use Permission::*;
    Some(match path.strip_prefix("/yandex.cloud.")? {
        "compute.v1.ImageService/Get" => ImagesGet,
        "compute.v1.ImageService/GetLatestByFamily" => ImagesGetLatest,
        "compute.v1.ImageService/List" => ImagesList,
        "compute.v1.ImageService/Create" => ImagesCreate,
        "compute.v1.ImageService/Update" => ImagesUpdate,
        "compute.v1.ImageService/Delete" => ImagesDelete,
        "compute.v1.ImageService/ListOperations" => ImagesListOperations,
        "compute.v1.ImageService/ListAccessBindings" => ImagesListAccessBindings,
        "compute.v1.ImageService/SetAccessBindings"
        | "compute.v1.ImageService/UpdateAccessBindings" => ImagesSetAccessBindings,
        "operation.OperationService/Get" => OperationsGet,
        "operation.OperationService/Cancel" => OperationsCancel,
        _ => return None,
    })
}

/// A role one may bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read.
    Viewer,
    /// Read and change.
    Editor,
    /// Read, change and manage access.
    Admin,
    /// Read one image and find the latest of a family.
    ImagesUser,
}

impl Role {
    /// The role of a binding's `roleId`; `None` for roles that grant nothing here.
    pub fn parse(id: &str) -> Option<Self> {
        Some(match id {
            "viewer" | "compute.viewer" => Self::Viewer,
            "editor" | "compute.editor" => Self::Editor,
            "admin" | "compute.admin" => Self::Admin,
            "compute.images.user" => Self::ImagesUser,
            _ => return None,
        })
    }

    /// Whether the role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        let read = matches!(
            permission,
            ImagesGet
                | ImagesList
                | ImagesGetLatest
                | ImagesListOperations
                | ImagesListAccessBindings
                | OperationsGet
        );
        let change = matches!(
            permission,
            ImagesCreate | ImagesUpdate | ImagesDelete | OperationsCancel
        );
        match self {
            Self::Viewer => read,
            Self::Editor => read || change,
            Self::Admin => true,
            Self::ImagesUser => matches!(permission, ImagesGet | ImagesGetLatest),
        }
    }
}

/// The IAM config file (`--iam-config`), in the API's own shapes:
/// `{"folderBindings": {"<folderId>": [{"roleId": "editor", "subject": {"id": "<saId>",
/// "type": "serviceAccount"}}]}, "oauthTokens": {"<token>": "<userAccountId>"}}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IamConfig {
    /// Role bindings per folder.
    #[serde(default)]
    pub folder_bindings: HashMap<String, Vec<AccessBinding>>,
    /// OAuth tokens this server accepts (it cannot ask Yandex ID), each for a user account.
    #[serde(default)]
    pub oauth_tokens: HashMap<String, String>,
}

impl IamConfig {
    /// Reads the file; an error names the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --iam-config {}: {e}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| format!("--iam-config {}: {e}", path.display()))?;
        for (folder, bindings) in &config.folder_bindings {
            for b in bindings {
                if Role::parse(&b.role_id).is_none() {
                    return Err(format!(
                        "--iam-config {}: folder {folder}: unknown role {:?} (known: viewer, editor, admin, compute.viewer, compute.editor, compute.admin, compute.images.user)",
                        path.display(),
                        b.role_id
                    ));
                }
            }
        }
        Ok(config)
    }

    /// The folder's bindings.
    pub fn folder(&self, folder_id: &str) -> &[AccessBinding] {
        self.folder_bindings
            .get(folder_id)
            .map_or(&[], Vec::as_slice)
    }
}

/// Whether one of `bindings` gives `subject` (by id and type) a role that grants `permission`.
/// `system:allAuthenticatedUsers` and `system:allUsers` bind every caller with a valid token.
pub fn allows(
    bindings: &[AccessBinding],
    subject_id: &str,
    subject_type: &str,
    permission: Permission,
) -> bool {
    bindings.iter().any(|b| {
        let Some(s) = &b.subject else { return false };
        let matches = (s.id == subject_id && s.r#type == subject_type)
            || (s.r#type == "system"
                && matches!(s.id.as_str(), "allAuthenticatedUsers" | "allUsers"));
        matches && Role::parse(&b.role_id).is_some_and(|r| r.grants(permission))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::yandex::cloud::access::Subject;

    fn binding(role: &str, id: &str, ty: &str) -> AccessBinding {
        AccessBinding {
            role_id: role.into(),
            subject: Some(Subject {
                id: id.into(),
                r#type: ty.into(),
            }),
        }
    }

    #[test]
    fn roles_nest_and_bindings_match_by_id_and_type() {
        use Permission::*;
        assert!(Role::Viewer.grants(ImagesGet) && !Role::Viewer.grants(ImagesUpdate));
        assert!(Role::Editor.grants(ImagesDelete) && !Role::Editor.grants(ImagesSetAccessBindings));
        assert!(Role::Admin.grants(ImagesSetAccessBindings));
        assert!(Role::ImagesUser.grants(ImagesGet) && Role::ImagesUser.grants(ImagesGetLatest));
        assert!(
            !Role::ImagesUser.grants(ImagesList) && !Role::ImagesUser.grants(ImagesListOperations)
        );
        let b = [binding("compute.editor", "sa1", "serviceAccount")];
        assert!(allows(&b, "sa1", "serviceAccount", ImagesUpdate));
        assert!(
            !allows(&b, "sa1", "userAccount", ImagesUpdate),
            "the type must match too"
        );
        assert!(!allows(&b, "sa2", "serviceAccount", ImagesGet));
        assert!(!allows(
            &[binding(
                "resource-manager.clouds.owner",
                "sa1",
                "serviceAccount"
            )],
            "sa1",
            "serviceAccount",
            ImagesGet
        ));
        let public = [binding(
            "compute.images.user",
            "allAuthenticatedUsers",
            "system",
        )];
        assert!(allows(&public, "anyone", "userAccount", ImagesGet));
        assert!(!allows(&public, "anyone", "userAccount", ImagesDelete));
    }

    #[test]
    fn the_config_file_is_read_in_the_api_shapes_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("iam.json");
        std::fs::write(&path, r#"{"folderBindings": {"b1g": [{"roleId": "editor", "subject": {"id": "sa1", "type": "serviceAccount"}}]}, "oauthTokens": {"y0_x": "user1"}}"#).expect("write");
        let config = IamConfig::load(&path).expect("valid");
        assert!(allows(
            config.folder("b1g"),
            "sa1",
            "serviceAccount",
            Permission::ImagesCreate
        ));
        assert!(config.folder("other").is_empty());
        assert_eq!(config.oauth_tokens["y0_x"], "user1");
        std::fs::write(&path, r#"{"folderBindings": {"b1g": [{"roleId": "owner", "subject": {"id": "sa1", "type": "serviceAccount"}}]}}"#).expect("write");
        assert!(
            IamConfig::load(&path)
                .expect_err("unknown role")
                .contains("\"owner\"")
        );
        std::fs::write(&path, r#"{"folderBinding": {}}"#).expect("write");
        assert!(
            IamConfig::load(&path)
                .expect_err("typo")
                .contains("folderBinding")
        );
    }

    #[test]
    fn every_method_of_the_protected_services_has_a_permission() {
        let pool = crate::pb::descriptor_pool();
        for name in [
            "yandex.cloud.compute.v1.ImageService",
            "yandex.cloud.operation.OperationService",
        ] {
            let service = pool.get_service_by_name(name).expect("service");
            for m in service.methods() {
                let path = format!("/{}/{}", name, m.name());
                assert!(permission_of(&path).is_some(), "{path} has no permission");
            }
        }
        assert_eq!(
            permission_of("/yandex.cloud.compute.v1.ImageService/Nope"),
            None
        );
    }
}
