//! How the store's records sit in redb's tables: one table per kind of record, keyed by id,
//! plus the index tables that List and the uniqueness checks read; values are the protobuf
//! encodings of the API messages. Reads of these tables are written once ([`Source`] and the
//! [`Tx`] it gives), for committed snapshots and for a write job's view alike.

use std::ops::{Bound, Range};

use redb::{ReadableTable, TableDefinition};

use crate::pb::yandex::cloud::access::AccessBinding;
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;
use crate::store::{
    IdempotencyRecord, ImageCursor, ImageOrder, IssuedToken, OperationCursor, OperationResource,
    RunningCreate, ServiceAccountKey, StoreError, Tx, bindings_of,
};

/// A table: its redb definition and a small id that batches index their open tables by.
#[derive(Clone, Copy)]
pub(super) struct Table {
    pub(super) id: u8,
    pub(super) def: TableDefinition<'static, &'static str, &'static [u8]>,
}

const fn table(id: u8, name: &'static str) -> Table {
    Table {
        id,
        def: TableDefinition::new(name),
    }
}

pub(super) const IMAGES: Table = table(0, "images");
/// `folder_id \0 image_id` -> empty.
pub(super) const FOLDER_IMAGES: Table = table(1, "folder_images");
/// `folder_id \0 name` -> image id, for names unique within a folder.
pub(super) const FOLDER_NAMES: Table = table(2, "folder_names");
pub(super) const OPERATIONS: Table = table(3, "operations");
/// `image_id \0 created_at nanos (zero-padded) \0 operation_id` -> empty.
pub(super) const IMAGE_OPERATIONS: Table = table(4, "image_operations");
pub(super) const BINDINGS: Table = table(5, "bindings");
pub(super) const IDEMPOTENCY: Table = table(6, "idempotency");
pub(super) const RUNNING: Table = table(7, "running_creates");
/// `created_at nanos (zero-padded) \0 operation_id \0 image_id` -> empty: operations oldest
/// first, for retention.
pub(super) const OPERATIONS_BY_TIME: Table = table(8, "operations_by_time");
/// `recorded nanos (zero-padded) \0 idempotency key` -> empty: keys oldest first, for
/// retention.
pub(super) const IDEMPOTENCY_BY_TIME: Table = table(9, "idempotency_by_time");
/// `folder_id \0 name \0 image_id` -> empty: a folder's images by name.
pub(super) const FOLDER_BY_NAME: Table = table(10, "folder_images_by_name");
/// `folder_id \0 created_at (24 digits) \0 image_id` -> empty: a folder's images by age.
pub(super) const FOLDER_BY_CREATED: Table = table(11, "folder_images_by_created");

/// Records of the store itself: `health` -> the time of the health probe's last write.
pub(super) const META: Table = table(12, "meta");
/// Operation id -> the resource it acts on.
pub(super) const OPERATION_FOLDERS: Table = table(13, "operation_resources");
/// Key id -> a service account's public key.
pub(super) const SA_KEYS: Table = table(14, "service_account_keys");
/// Hex SHA-256 of an IAM token -> the issued token.
pub(super) const TOKENS: Table = table(15, "iam_tokens");
/// `expires nanos (zero-padded) \0 token hash` -> empty: tokens by expiry, for retention.
pub(super) const TOKENS_BY_EXPIRY: Table = table(16, "iam_tokens_by_expiry");

pub(super) const ALL_TABLES: [Table; 17] = [
    IMAGES,
    FOLDER_IMAGES,
    FOLDER_NAMES,
    OPERATIONS,
    IMAGE_OPERATIONS,
    BINDINGS,
    IDEMPOTENCY,
    RUNNING,
    OPERATIONS_BY_TIME,
    IDEMPOTENCY_BY_TIME,
    FOLDER_BY_NAME,
    FOLDER_BY_CREATED,
    META,
    OPERATION_FOLDERS,
    SA_KEYS,
    TOKENS,
    TOKENS_BY_EXPIRY,
];

/// The index of an order, and the key of a place in it.
pub(super) fn order_index(order: ImageOrder) -> Table {
    match order {
        ImageOrder::Id => FOLDER_IMAGES,
        ImageOrder::Name => FOLDER_BY_NAME,
        ImageOrder::CreatedAt => FOLDER_BY_CREATED,
    }
}

/// The key of `cursor` in the index of `order`.
pub(super) fn order_key(order: ImageOrder, folder_id: &str, cursor: &ImageCursor) -> String {
    match order {
        ImageOrder::Id => key(folder_id, &cursor.id),
        _ => format!("{folder_id}\0{}\0{}", cursor.primary, cursor.id),
    }
}

/// A redb failure, classified (see [`StoreError::from_redb`]).
pub(super) fn err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::from_redb(e)
}

/// An index key: a parent and a child, NUL-separated so a prefix scan of `parent\0` finds
/// exactly the parent's entries.
pub(super) fn key(parent: &str, child: &str) -> String {
    format!("{parent}\0{child}")
}

/// Builds the indexes of a store written before they existed: a folder's images by name and
/// by age; every operation by its creation time; every idempotency record as made now (so it
/// expires a retention period from now). A no-op once they are built.
pub(super) fn backfill(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut by_time = tx.open_table(OPERATIONS_BY_TIME.def).map_err(err)?;
    if by_time.first().map_err(err)?.is_none() {
        let history = tx.open_table(IMAGE_OPERATIONS.def).map_err(err)?;
        for item in history.iter().map_err(err)? {
            let (k, _) = item.map_err(err)?;
            let mut parts = k.value().splitn(3, '\0');
            if let (Some(image_id), Some(nanos), Some(op_id)) =
                (parts.next(), parts.next(), parts.next())
            {
                let index = format!("{nanos}\0{op_id}\0{image_id}");
                by_time.insert(index.as_str(), &[][..]).map_err(err)?;
            }
        }
    }
    let mut by_name = tx.open_table(FOLDER_BY_NAME.def).map_err(err)?;
    let mut by_created = tx.open_table(FOLDER_BY_CREATED.def).map_err(err)?;
    if by_name.first().map_err(err)?.is_none() && by_created.first().map_err(err)?.is_none() {
        let images = tx.open_table(IMAGES.def).map_err(err)?;
        for item in images.iter().map_err(err)? {
            let (id, bytes) = item.map_err(err)?;
            let fields: IndexedFields = decode(bytes.value())?;
            for (order, table) in [
                (ImageOrder::Name, &mut by_name),
                (ImageOrder::CreatedAt, &mut by_created),
            ] {
                let index = order_key(order, &fields.folder_id, &fields.cursor(order, id.value()));
                table.insert(index.as_str(), &[][..]).map_err(err)?;
            }
        }
    }
    let mut keys_by_time = tx.open_table(IDEMPOTENCY_BY_TIME.def).map_err(err)?;
    if keys_by_time.first().map_err(err)?.is_none() {
        let now = crate::store::now_nanos();
        let keys = tx.open_table(IDEMPOTENCY.def).map_err(err)?;
        for item in keys.iter().map_err(err)? {
            let (k, _) = item.map_err(err)?;
            let index = format!("{now:020}\0{}", k.value());
            keys_by_time.insert(index.as_str(), &[][..]).map_err(err)?;
        }
    }
    Ok(())
}

pub(super) use crate::store::decode;

pub(super) fn op_index_key(image_id: &str, op: &Operation) -> String {
    let nanos = OperationCursor::created_nanos_of(op);
    format!("{image_id}\0{nanos:020}\0{}", op.id)
}

/// The [`OPERATIONS_BY_TIME`] key of an operation.
pub(super) fn op_time_key(image_id: &str, op: &Operation) -> String {
    let nanos = OperationCursor::created_nanos_of(op);
    format!("{nanos:020}\0{}\0{image_id}", op.id)
}

/// The keys of a time index (`nanos \0 ...`) from before `before` nanoseconds since the epoch.
pub(super) fn before(before: u128) -> std::ops::Range<String> {
    String::new()..format!("{before:020}")
}

/// The fields of a stored Image that its index entries are made of: decoding only these
/// (prost skips the other fields) is what `put_image` needs to know of the old record.
#[derive(Clone, PartialEq, ::prost::Message)]
pub(super) struct IndexedFields {
    #[prost(string, tag = "2")]
    pub(super) folder_id: String,
    #[prost(string, tag = "4")]
    pub(super) name: String,
    #[prost(message, optional, tag = "3")]
    pub(super) created_at: Option<crate::json::Timestamp>,
}

impl IndexedFields {
    /// The place of image `id`, with these fields, in `order`.
    pub(super) fn cursor(&self, order: ImageOrder, id: &str) -> ImageCursor {
        ImageCursor::from_fields(order, id, &self.name, self.created_at.as_ref())
    }
}

/// The reads the store makes of its tables, for committed snapshots and a write job's view
/// alike; the [`Tx`] of the API is written once over them.
pub(super) trait Source {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Keys in `range`, from the highest down, at most `limit`.
    fn keys_rev(
        &self,
        table: Table,
        range: Range<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Keys between the bounds, in order (from the highest when `descending`), each handed to
    /// `visit` until it returns false.
    fn scan(
        &self,
        table: Table,
        bounds: (Bound<&str>, Bound<&str>),
        descending: bool,
        visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;
}

/// Where reads find their tables: a read transaction opens each as it is read; a write batch
/// has them all open.
pub(super) trait Tables {
    /// Runs `read` on `table`.
    fn with<R>(
        &self,
        table: Table,
        read: impl FnOnce(&dyn TableReads) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;
}

impl Tables for redb::ReadTransaction {
    fn with<R>(
        &self,
        table: Table,
        read: impl FnOnce(&dyn TableReads) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        read(&self.open_table(table.def).map_err(err)?)
    }
}

impl<T: Tables> Source for T {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(table, |t| t.get(key))
    }
    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with(table, |t| t.prefix(prefix))
    }
    fn keys_rev(
        &self,
        table: Table,
        range: Range<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with(table, |t| t.keys_rev(range, limit))
    }
    fn scan(
        &self,
        table: Table,
        bounds: (Bound<&str>, Bound<&str>),
        descending: bool,
        visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.with(table, |t| t.scan(bounds, descending, visit))
    }
}

/// The reads of one open table, however it was opened.
pub(super) trait TableReads {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    fn keys_rev(&self, range: Range<&str>, limit: usize) -> Result<Vec<String>, StoreError>;
    fn scan(
        &self,
        bounds: (Bound<&str>, Bound<&str>),
        descending: bool,
        visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;
}

impl<T: ReadableTable<&'static str, &'static [u8]>> TableReads for T {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(ReadableTable::get(self, key)
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    fn prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.range(prefix..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn keys_rev(&self, range: Range<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.range(range).map_err(err)?.rev().take(limit) {
            let (k, _) = item.map_err(err)?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    fn scan(
        &self,
        bounds: (Bound<&str>, Bound<&str>),
        descending: bool,
        visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let range = self.range::<&str>((bounds.0, bounds.1)).map_err(err)?;
        let mut each =
            |item: Result<(redb::AccessGuard<'_, &'static str>, _), redb::StorageError>| {
                let (k, _) = item.map_err(err)?;
                visit(k.value())
            };
        if descending {
            for item in range.rev() {
                if !each(item)? {
                    break;
                }
            }
        } else {
            for item in range {
                if !each(item)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl<S: Source> Tx for S {
    fn image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        self.get(IMAGES, id)?.map(|b| decode(&b)).transpose()
    }
    fn folder_images(&self, folder_id: &str) -> Result<Vec<Image>, StoreError> {
        let mut out = Vec::new();
        for (key, _) in self.prefix(FOLDER_IMAGES, &format!("{folder_id}\0"))? {
            let id = &key[folder_id.len() + 1..];
            if let Some(image) = self.image(id)? {
                out.push(image);
            }
        }
        Ok(out)
    }
    fn folder_scan(
        &self,
        folder_id: &str,
        order: ImageOrder,
        descending: bool,
        after: Option<&ImageCursor>,
        visit: &mut dyn FnMut(Image) -> bool,
    ) -> Result<(), StoreError> {
        let lo = format!("{folder_id}\0");
        let hi = format!("{folder_id}\u{1}");
        let cursor = after.map(|c| order_key(order, folder_id, c));
        let bounds = match (&cursor, descending) {
            (None, _) => (Bound::Included(lo.as_str()), Bound::Excluded(hi.as_str())),
            (Some(c), false) => (Bound::Excluded(c.as_str()), Bound::Excluded(hi.as_str())),
            (Some(c), true) => (Bound::Included(lo.as_str()), Bound::Excluded(c.as_str())),
        };
        self.scan(order_index(order), bounds, descending, &mut |key| {
            let id = key.rsplit('\0').next().unwrap_or_default();
            match self.image(id)? {
                Some(image) => Ok(visit(image)),
                None => Ok(true),
            }
        })
    }
    fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        self.get(OPERATIONS, id)?.map(|b| decode(&b)).transpose()
    }
    fn image_named(&self, folder_id: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(FOLDER_NAMES, &key(folder_id, name))?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }
    fn image_operations_page(
        &self,
        image_id: &str,
        before: Option<&OperationCursor>,
        limit: usize,
    ) -> Result<Vec<(OperationCursor, Operation)>, StoreError> {
        let lo = format!("{image_id}\0");
        let hi = match before {
            Some(c) => format!("{image_id}\0{:020}\0{}", c.created_nanos, c.operation_id),
            None => format!("{image_id}\u{1}"),
        };
        let mut out = Vec::new();
        for key in self.keys_rev(IMAGE_OPERATIONS, lo.as_str()..hi.as_str(), limit)? {
            let mut parts = key[lo.len()..].splitn(2, '\0');
            let nanos = parts
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            let op_id = parts.next().unwrap_or_default();
            if let Some(op) = self.operation(op_id)? {
                let cursor = OperationCursor {
                    created_nanos: nanos,
                    operation_id: op_id.to_string(),
                };
                out.push((cursor, op));
            }
        }
        Ok(out)
    }
    fn bindings(&self, image_id: &str) -> Result<Vec<AccessBinding>, StoreError> {
        Ok(self
            .get(BINDINGS, image_id)?
            .map(|b| bindings_of(&b))
            .transpose()?
            .unwrap_or_default())
    }
    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get(IDEMPOTENCY, key)?.map(|b| decode(&b)).transpose()
    }
    fn running_create(&self, operation_id: &str) -> Result<Option<RunningCreate>, StoreError> {
        self.get(RUNNING, operation_id)?
            .map(|b| decode(&b))
            .transpose()
    }
    fn running_creates(&self) -> Result<Vec<RunningCreate>, StoreError> {
        self.prefix(RUNNING, "")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }
    fn operation_resource(
        &self,
        operation_id: &str,
    ) -> Result<Option<OperationResource>, StoreError> {
        self.get(OPERATION_FOLDERS, operation_id)?
            .map(|b| decode(&b))
            .transpose()
    }
    fn service_account_key(&self, id: &str) -> Result<Option<ServiceAccountKey>, StoreError> {
        self.get(SA_KEYS, id)?.map(|b| decode(&b)).transpose()
    }
    fn service_account_keys(&self) -> Result<Vec<ServiceAccountKey>, StoreError> {
        self.prefix(SA_KEYS, "")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }
    fn issued_token(&self, hash: &str) -> Result<Option<IssuedToken>, StoreError> {
        self.get(TOKENS, hash)?.map(|b| decode(&b)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn indexed_fields_decode_from_a_stored_image() {
        let img = Image {
            id: "fd8x".into(),
            folder_id: "b1gfolder".into(),
            name: "the-name".into(),
            description: "other fields are skipped".into(),
            ..Default::default()
        };
        let fields: IndexedFields = decode(&img.encode_to_vec()).expect("decodes");
        assert_eq!(fields.folder_id, "b1gfolder");
        assert_eq!(fields.name, "the-name");
    }
}
