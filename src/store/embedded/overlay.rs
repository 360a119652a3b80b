//! One write job's view of its batch's transaction: reads see the transaction's open tables
//! ([`OpenTables`]: the batch's earlier jobs included) with this job's own staged writes on top;
//! writes are staged, in order, and reach the transaction only through [`Staged::apply`], when
//! the job succeeds.

use std::collections::{BTreeMap, BTreeSet};

use std::ops::Range;

use prost::Message;

use super::layout::{
    BINDINGS, FOLDER_IMAGES, FOLDER_NAMES, IDEMPOTENCY, IMAGE_OPERATIONS, IMAGES, IndexedFields,
    OPERATIONS, RUNNING, Source, Table, TableReads, Tables, decode, err, key, op_index_key,
};
use crate::pb::yandex::cloud::access::{AccessBinding, ListAccessBindingsResponse};
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;
use crate::store::{IdempotencyRecord, RunningCreate, StoreError, Tx, TxMut};

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
        self.put(IMAGES, &image.id, image.encode_to_vec())
    }
    fn delete_image(&mut self, id: &str) -> Result<(), StoreError> {
        if let Some(image) = self.image(id)? {
            self.remove(FOLDER_IMAGES, &key(&image.folder_id, &image.id))?;
            if !image.name.is_empty() {
                self.remove(FOLDER_NAMES, &key(&image.folder_id, &image.name))?;
            }
        }
        self.remove(IMAGES, id)?;
        self.remove(BINDINGS, id)
    }
    fn put_operation(&mut self, op: &Operation, image_id: &str) -> Result<(), StoreError> {
        self.put(OPERATIONS, &op.id, op.encode_to_vec())?;
        self.put(IMAGE_OPERATIONS, &op_index_key(image_id, op), Vec::new())
    }
    fn put_bindings(
        &mut self,
        image_id: &str,
        bindings: &[AccessBinding],
    ) -> Result<(), StoreError> {
        let record = ListAccessBindingsResponse {
            access_bindings: bindings.to_vec(),
            next_page_token: String::new(),
        };
        self.put(BINDINGS, image_id, record.encode_to_vec())
    }
    fn put_idempotency(&mut self, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError> {
        self.put(IDEMPOTENCY, key, record.encode_to_vec())
    }
    fn put_running_create(&mut self, running: &RunningCreate) -> Result<(), StoreError> {
        self.put(RUNNING, &running.operation_id, running.encode_to_vec())
    }
    fn clear_running_create(&mut self, operation_id: &str) -> Result<(), StoreError> {
        self.remove(RUNNING, operation_id)
    }
}
