//! Where the route table's services come from, in this order: the services compiled into the
//! binary, each `--descriptor-set` file, then what each backend lists over server reflection
//! (`--reflect`, see `reflect.rs`). A file (by its name) already known from an earlier source is
//! kept as it was: the first source wins, and the log says which files were skipped. Then the
//! rules of `--http-config` and the auto-mapped methods (`--auto-map`).
//!
//! The sources are read at start and again on every reload; a reload whose sources read the
//! same as the table's (the same fingerprint) changes nothing.

use std::collections::HashSet;
use std::path::PathBuf;

use prost_reflect::DescriptorPool;

use super::routes::{RouteError, RouteTable, TableOptions};
use super::rules;
use crate::pb::google::api::HttpRule;

/// Which services' methods with no rule are served as `POST /package.Service/Method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AutoMap {
    /// Those of services loaded at run time (descriptor sets, reflection), not the compiled-in
    /// ones (the default).
    #[default]
    Loaded,
    /// Every service's.
    All,
    /// None: a method is served only by its rules.
    Off,
}

/// The sources of the route table beside the compiled-in services.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Binary `FileDescriptorSet`s, as `protoc --include_imports -o` or `buf build -o` write
    /// them (`--descriptor-set`).
    pub descriptor_sets: Vec<PathBuf>,
    /// Ask each backend for its services over server reflection (`--reflect`).
    pub reflect: bool,
    /// A gRPC API configuration whose `http.rules` add to or replace the annotations
    /// (`--http-config`).
    pub http_config: Option<PathBuf>,
    /// Which methods with no rule are auto-mapped (`--auto-map`).
    pub auto_map: AutoMap,
    /// Transcode the compiled-in services dynamically too, as if they had been loaded
    /// (`--transcode-dynamically`: to measure the dynamic path against the compiled one).
    pub all_dynamic: bool,
}

/// A `FileDescriptorSet`, each file left encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
pub(crate) struct RawSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub(crate) file: Vec<Vec<u8>>,
}

/// The name and imports of an encoded `FileDescriptorProto` (its other fields are skipped).
#[derive(Clone, PartialEq, ::prost::Message)]
pub(crate) struct RawFile {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, repeated, tag = "3")]
    pub(crate) dependency: Vec<String>,
}

/// The files of every source, read: the pool, the services that were not compiled in, the
/// configured rules, and a fingerprint of all of it.
pub(crate) struct Loaded {
    pool: DescriptorPool,
    loaded: HashSet<String>,
    config: Vec<HttpRule>,
    pub(crate) fingerprint: [u8; 32],
}

impl Loaded {
    /// Reads the descriptor sets and the HTTP config of `sources`, and adds the files each
    /// backend reported (`reflected`: the backend's name, and its encoded files).
    pub(crate) fn read(
        sources: &Sources,
        reflected: Vec<(String, Vec<Vec<u8>>)>,
    ) -> Result<Self, RouteError> {
        let mut pool = crate::pb::descriptor_pool().clone();
        let mut loaded = HashSet::new();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for path in &sources.descriptor_sets {
            let bytes = std::fs::read(path).map_err(|e| {
                RouteError::Descriptors(format!("cannot read {}: {e}", path.display()))
            })?;
            let set = <RawSet as prost::Message>::decode(bytes.as_slice()).map_err(|e| {
                RouteError::Descriptors(format!(
                    "{} is not a FileDescriptorSet: {e}",
                    path.display()
                ))
            })?;
            let source = path.display().to_string();
            add(&mut pool, &mut loaded, &mut hash, &source, set.file)
                .map_err(RouteError::Descriptors)?;
        }
        for (backend, files) in reflected {
            let source = format!("reflection of {backend}");
            add(&mut pool, &mut loaded, &mut hash, &source, files)
                .map_err(RouteError::Reflected)?;
        }
        let config = match &sources.http_config {
            Some(path) => {
                hash.update(&std::fs::read(path).unwrap_or_default());
                rules::read_config(path).map_err(RouteError::Config)?
            }
            None => Vec::new(),
        };
        Ok(Self {
            pool,
            loaded,
            config,
            fingerprint: hash
                .finish()
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes"),
        })
    }

    /// The route table of the services `served` (by full name) has a backend for.
    pub(crate) fn table(
        &self,
        sources: &Sources,
        served: &dyn Fn(&str) -> bool,
    ) -> Result<RouteTable, RouteError> {
        let auto_map = |service: &prost_reflect::ServiceDescriptor| match sources.auto_map {
            AutoMap::All => !service.full_name().starts_with("grpc.reflection."),
            AutoMap::Loaded => self.loaded.contains(service.full_name()),
            AutoMap::Off => false,
        };
        RouteTable::build(
            &self.pool,
            &TableOptions {
                config: &self.config,
                auto_map: &auto_map,
                served,
                dynamic: sources.all_dynamic,
            },
        )
    }
}

/// Adds the encoded `files` of one source to `pool` but for those it already has (the first
/// source wins), noting the services they bring and hashing their bytes. The files may come in
/// any order.
fn add(
    pool: &mut DescriptorPool,
    loaded: &mut HashSet<String>,
    hash: &mut ring::digest::Context,
    source: &str,
    files: Vec<Vec<u8>>,
) -> Result<(), String> {
    let mut kept = Vec::new();
    let mut new = RawSet::default();
    let mut names = Vec::new();
    for file in files {
        let name = <RawFile as prost::Message>::decode(file.as_slice())
            .map(|f| f.name)
            .map_err(|e| format!("{source}: a file does not decode: {e}"))?;
        if pool.get_file_by_name(&name).is_some() || names.contains(&name) {
            kept.push(name);
            continue;
        }
        hash.update(&file);
        names.push(name);
        new.file.push(file);
    }
    if !kept.is_empty() {
        tracing::info!(
            source,
            files = ?kept,
            "files already known from an earlier source were kept as they were"
        );
    }
    if new.file.is_empty() {
        return Ok(());
    }
    // Decoded from their bytes, so that their options (google.api.http among them) stay.
    pool.decode_file_descriptor_set(prost::Message::encode_to_vec(&new).as_slice())
        .map_err(|e| format!("{source}: {e}"))?;
    for name in names {
        if let Some(file) = pool.get_file_by_name(&name) {
            loaded.extend(file.services().map(|s| s.full_name().to_string()));
        }
    }
    Ok(())
}
