//! Canonical proto3 JSON (protobuf.dev "ProtoJSON format") where pbjson-types is not: our own
//! `FieldMask`, `Timestamp` and `Any`, wired into the generated code through `extern_path`, and
//! the build-generated field schema of every message.

mod any;
mod field_mask;
pub mod schema;
mod timestamp;

pub use any::Any;
pub use field_mask::FieldMask;
pub use timestamp::Timestamp;
