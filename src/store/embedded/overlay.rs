//! One write job's view of its batch's transaction: reads see the transaction's open tables
//! ([`OpenTables`]: the batch's earlier jobs included) with this job's own staged writes on top;
//! writes are staged, in order, and reach the transaction only through [`Staged::apply`], when
//! the job succeeds.

use std::collections::{BTreeMap, BTreeSet};

use std::ops::{Bound, Range, RangeBounds};

use prost::Message;

use super::layout::{
    BINDINGS, FOLDER_IMAGES, FOLDER_NAMES, IDEMPOTENCY, IDEMPOTENCY_BY_TIME, IMAGE_OPERATIONS,
    IMAGES, IndexedFields, META, OPERATION_FOLDERS, OPERATIONS, OPERATIONS_BY_TIME, RUNNING,
    SA_KEYS, Source, TOKENS, TOKENS_BY_EXPIRY, Table, TableReads, Tables, before, decode, err, key,
    op_index_key, op_time_key, order_index, order_key,
};
use crate::pb::yandex::cloud::access::AccessBinding;
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;
use crate::store::{
    Cutoffs, IdempotencyRecord, ImageCursor, ImageOrder, IssuedToken, OperationResource,
    RunningCreate, ServiceAccountKey, StoreError, Tx, TxMut, bindings_record, now_nanos,
};

/// The tables of a write transaction, open for one batch, indexed by [`Table::id`].
pub(super) struct OpenTables<'t>(Vec<redb::Table<'t, &'static str, &'static [u8]>>);

impl<'t> OpenTables<'t> {
    /// The tables of [`super::layout::ALL_TABLES`], opened in that order.
    pub(super) fn new(tables: Vec<redb::Table<'t, &'static str, &'static [u8]>>) -> Self {
        Self(tables)
    }

    /// Inserts (`Some`) or removes (`None`) one entry.
    pub(super) fn write(
        &mut self,
        table: Table,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let t = &mut self.0[usize::from(table.id)];
        match value {
            Some(v) => t.insert(key, v).map_err(err)?,
            None => t.remove(key).map_err(err)?,
        };
        Ok(())
    }
}

impl Tables for OpenTables<'_> {
    fn with<R>(
        &self,
        table: Table,
        read: impl FnOnce(&dyn TableReads) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        read(&self.0[usize::from(table.id)])
    }
}

/// A job's staged writes over the batch's open tables.
pub(super) struct Staged<'a, 't> {
    tables: &'a mut OpenTables<'t>,
    /// `(table, key, Some(value) to insert | None to remove)`, oldest first.
    writes: Vec<(Table, String, Option<Vec<u8>>)>,
}

impl<'a, 't> Staged<'a, 't> {
    pub(super) fn new(tables: &'a mut OpenTables<'t>) -> Self {
        Self {
            tables,
            writes: Vec::new(),
        }
    }

    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.writes.push((table, key.to_string(), Some(value)));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.writes.push((table, key.to_string(), None));
        Ok(())
    }

    /// The staged writes of `table` whose keys satisfy `within`, oldest first.
    fn staged<'s>(
        &'s self,
        table: Table,
        within: impl Fn(&str) -> bool + 's,
    ) -> impl Iterator<Item = (&'s str, Option<&'s Vec<u8>>)> + 's {
        self.writes
            .iter()
            .filter(move |(t, k, _)| t.id == table.id && within(k))
            .map(|(_, k, v)| (k.as_str(), v.as_ref()))
    }

    /// Writes the staged changes into the batch's transaction, in order.
    pub(super) fn apply(self) -> Result<(), StoreError> {
        for (table, key, value) in self.writes {
            self.tables.write(table, &key, value.as_deref())?;
        }
        Ok(())
    }
}

impl Source for Staged<'_, '_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.staged(table, |k| k == key).last() {
            Some((_, value)) => Ok(value.cloned()),
            None => self.tables.get(table, key),
        }
    }

    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut merged: BTreeMap<String, Vec<u8>> =
            self.tables.prefix(table, prefix)?.into_iter().collect();
        for (key, value) in self.staged(table, |k| k.starts_with(prefix)) {
            match value {
                Some(v) => merged.insert(key.to_string(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn keys_rev(
        &self,
        table: Table,
        range: Range<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let in_range = |k: &str| range.start <= k && k < range.end;
        // Enough committed keys that the staged removals cannot leave the page short.
        let extra = self.staged(table, in_range).count();
        let mut merged: BTreeSet<String> = self
            .tables
            .keys_rev(table, range.clone(), limit + extra)?
            .into_iter()
            .collect();
        for (key, value) in self.staged(table, in_range) {
            match value {
                Some(_) => merged.insert(key.to_string()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().rev().take(limit).collect())
    }

    fn scan(
        &self,
        table: Table,
        bounds: (Bound<&str>, Bound<&str>),
        descending: bool,
        visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        // A write job's scan merges the whole range with its staged writes: jobs scan small
        // ranges, and a List never runs in one.
        let mut merged = BTreeSet::new();
        self.tables.scan(table, bounds, false, &mut |k| {
            merged.insert(k.to_string());
            Ok(true)
        })?;
        for (key, value) in self.staged(table, |k| {
            RangeBounds::<&str>::contains(&(bounds.0, bounds.1), &k)
        }) {
            match value {
                Some(_) => merged.insert(key.to_string()),
                None => merged.remove(key),
            };
        }
        let mut keys: Box<dyn Iterator<Item = &String>> = if descending {
            Box::new(merged.iter().rev())
        } else {
            Box::new(merged.iter())
        };
        keys.try_for_each(|k| match visit(k) {
            Ok(true) => Ok(()),
            Ok(false) => Err(None),
            Err(e) => Err(Some(e)),
        })
        .or_else(|stop| stop.map_or(Ok(()), Err))
    }
}

impl TxMut for Staged<'_, '_> {
    fn put_image(&mut self, image: &Image) -> Result<(), StoreError> {
        let old = self
            .get(IMAGES, &image.id)?
            .map(|b| decode::<IndexedFields>(&b))
            .transpose()?;
        // The index entries change only when the name (or, never in practice, the folder)
        // does: an update that keeps them writes the image table alone.
        let (old_folder, old_name) = old
            .as_ref()
            .map_or(("", ""), |o| (o.folder_id.as_str(), o.name.as_str()));
        let moved = old.is_none() || old_folder != image.folder_id;
        if moved || old_name != image.name {
            if !old_name.is_empty() {
                self.remove(FOLDER_NAMES, &key(old_folder, old_name))?;
            }
            if !image.name.is_empty() {
                self.put(
                    FOLDER_NAMES,
                    &key(&image.folder_id, &image.name),
                    image.id.as_bytes().to_vec(),
                )?;
            }
        }
        if moved {
            if old.is_some() {
                self.remove(FOLDER_IMAGES, &key(old_folder, &image.id))?;
            }
            self.put(FOLDER_IMAGES, &key(&image.folder_id, &image.id), Vec::new())?;
        }
        for order in [ImageOrder::Name, ImageOrder::CreatedAt] {
            let new = order_key(order, &image.folder_id, &ImageCursor::of(order, image));
            let old = old
                .as_ref()
                .map(|o| order_key(order, &o.folder_id, &o.cursor(order, &image.id)));
            if old.as_ref() != Some(&new) {
                if let Some(old) = old {
                    self.remove(order_index(order), &old)?;
                }
                self.put(order_index(order), &new, Vec::new())?;
            }
        }
        self.put(IMAGES, &image.id, image.encode_to_vec())
    }
    fn delete_image(&mut self, id: &str) -> Result<(), StoreError> {
        if let Some(image) = self.image(id)? {
            self.remove(FOLDER_IMAGES, &key(&image.folder_id, &image.id))?;
            for order in [ImageOrder::Name, ImageOrder::CreatedAt] {
                let cursor = ImageCursor::of(order, &image);
                self.remove(
                    order_index(order),
                    &order_key(order, &image.folder_id, &cursor),
                )?;
            }
            if !image.name.is_empty() {
                self.remove(FOLDER_NAMES, &key(&image.folder_id, &image.name))?;
            }
        }
        self.remove(IMAGES, id)?;
        self.remove(BINDINGS, id)
    }
    fn put_operation(&mut self, op: &Operation, image_id: &str) -> Result<(), StoreError> {
        self.put(OPERATIONS, &op.id, op.encode_to_vec())?;
        self.put(OPERATIONS_BY_TIME, &op_time_key(image_id, op), Vec::new())?;
        self.put(IMAGE_OPERATIONS, &op_index_key(image_id, op), Vec::new())
    }
    fn put_bindings(
        &mut self,
        image_id: &str,
        bindings: &[AccessBinding],
    ) -> Result<(), StoreError> {
        self.put(BINDINGS, image_id, bindings_record(bindings))
    }
    fn put_idempotency(&mut self, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError> {
        if self.get(IDEMPOTENCY, key)?.is_none() {
            let index = format!("{:020}\0{key}", now_nanos());
            self.put(IDEMPOTENCY_BY_TIME, &index, Vec::new())?;
        }
        self.put(IDEMPOTENCY, key, record.encode_to_vec())
    }
    fn purge(&mut self, cutoffs: Cutoffs, limit: usize) -> Result<usize, StoreError> {
        let mut purged = 0;
        let range = before(cutoffs.operations);
        for index in self.keys_rev(
            OPERATIONS_BY_TIME,
            range.start.as_str()..range.end.as_str(),
            limit,
        )? {
            let mut parts = index.splitn(3, '\0');
            let (Some(_), Some(op_id), Some(image_id)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            match self.operation(op_id)? {
                // A create still running is not done: it stays, whatever its age.
                Some(op) if !op.done => continue,
                Some(op) => {
                    self.remove(IMAGE_OPERATIONS, &op_index_key(image_id, &op))?;
                    self.remove(OPERATIONS, op_id)?;
                    self.remove(OPERATION_FOLDERS, op_id)?;
                }
                None => {}
            }
            self.remove(OPERATIONS_BY_TIME, &index)?;
            purged += 1;
        }
        let range = before(cutoffs.idempotency_keys);
        for index in self.keys_rev(
            IDEMPOTENCY_BY_TIME,
            range.start.as_str()..range.end.as_str(),
            limit,
        )? {
            if let Some((_, key)) = index.split_once('\0') {
                self.remove(IDEMPOTENCY, key)?;
            }
            self.remove(IDEMPOTENCY_BY_TIME, &index)?;
            purged += 1;
        }
        let range = before(cutoffs.tokens);
        for index in self.keys_rev(
            TOKENS_BY_EXPIRY,
            range.start.as_str()..range.end.as_str(),
            limit,
        )? {
            if let Some((_, hash)) = index.split_once('\0') {
                self.remove(TOKENS, hash)?;
            }
            self.remove(TOKENS_BY_EXPIRY, &index)?;
            purged += 1;
        }
        Ok(purged)
    }
    fn put_running_create(&mut self, running: &RunningCreate) -> Result<(), StoreError> {
        self.put(RUNNING, &running.operation_id, running.encode_to_vec())
    }
    fn clear_running_create(&mut self, operation_id: &str) -> Result<(), StoreError> {
        self.remove(RUNNING, operation_id)
    }
    fn touch(&mut self) -> Result<(), StoreError> {
        self.put(META, "health", now_nanos().to_be_bytes().to_vec())
    }
    fn put_operation_resource(
        &mut self,
        operation_id: &str,
        resource: &OperationResource,
    ) -> Result<(), StoreError> {
        self.put(OPERATION_FOLDERS, operation_id, resource.encode_to_vec())
    }
    fn put_service_account_key(&mut self, key: &ServiceAccountKey) -> Result<(), StoreError> {
        self.put(SA_KEYS, &key.id, key.encode_to_vec())
    }
    fn delete_service_account_key(&mut self, id: &str) -> Result<bool, StoreError> {
        let existed = self.get(SA_KEYS, id)?.is_some();
        self.remove(SA_KEYS, id)?;
        Ok(existed)
    }
    fn put_issued_token(&mut self, hash: &str, token: &IssuedToken) -> Result<(), StoreError> {
        if self.get(TOKENS, hash)?.is_none() {
            let index = format!("{:020}\0{hash}", token.expires_nanos);
            self.put(TOKENS_BY_EXPIRY, &index, Vec::new())?;
        }
        self.put(TOKENS, hash, token.encode_to_vec())
    }
}
