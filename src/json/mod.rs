//! Canonical proto3 JSON (protobuf.dev "ProtoJSON format") where pbjson-types is not: our own
//! `FieldMask`, `Timestamp` and `Any`, wired into the generated code through `extern_path`.

mod any;
mod field_mask;
mod timestamp;

pub use any::Any;
pub use field_mask::FieldMask;
pub use timestamp::Timestamp;
