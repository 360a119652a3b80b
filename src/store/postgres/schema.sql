-- compute-gateway's tables in PostgreSQL, version 1. Every record is its protobuf encoding
-- (`body`) beside the columns its indexes need. Key columns use the "C" collation: pages are
-- in byte order, as the embedded store's, whatever the database's locale.

CREATE TABLE cg_images (
    id text COLLATE "C" PRIMARY KEY,
    folder_id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    -- The creation time as 24 digits that sort as numbers (see ImageCursor).
    created_key text COLLATE "C" NOT NULL,
    body bytea NOT NULL
);
-- Names are unique within a folder (the empty name is no name).
CREATE UNIQUE INDEX cg_images_folder_name_unique ON cg_images (folder_id, name) WHERE name <> '';
-- A folder's images by id, by name and by age: a page reads what it returns.
CREATE INDEX cg_images_by_id ON cg_images (folder_id, id);
CREATE INDEX cg_images_by_name ON cg_images (folder_id, name, id);
CREATE INDEX cg_images_by_created ON cg_images (folder_id, created_key, id);

CREATE TABLE cg_operations (
    id text COLLATE "C" PRIMARY KEY,
    image_id text COLLATE "C" NOT NULL,
    created_nanos bigint NOT NULL,
    done boolean NOT NULL,
    body bytea NOT NULL
);
-- An image's history, newest first; and every operation by age, for retention.
CREATE INDEX cg_operations_by_image ON cg_operations (image_id, created_nanos, id);
CREATE INDEX cg_operations_by_age ON cg_operations (created_nanos);

CREATE TABLE cg_access_bindings (
    image_id text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL
);

-- The key is the caller, the method and the client's key, NUL-separated: bytes, as text
-- cannot hold a NUL.
CREATE TABLE cg_idempotency_keys (
    key bytea PRIMARY KEY,
    recorded_nanos bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX cg_idempotency_keys_by_age ON cg_idempotency_keys (recorded_nanos);

CREATE TABLE cg_running_creates (
    operation_id text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL
);

CREATE TABLE cg_operation_resources (
    operation_id text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL
);

CREATE TABLE cg_service_account_keys (
    id text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL
);

CREATE TABLE cg_iam_tokens (
    hash text COLLATE "C" PRIMARY KEY,
    expires_nanos bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX cg_iam_tokens_by_expiry ON cg_iam_tokens (expires_nanos);

-- Records of the store itself: `health`, the time of the health probe's last write.
CREATE TABLE cg_meta (
    key text PRIMARY KEY,
    value bigint NOT NULL
);
