//! Generated protobuf code (prost messages, tonic services, pbjson serde) for every package in
//! `proto/`, and the encoded descriptor set the build embedded, custom options included.

#![allow(clippy::all, missing_docs, unreachable_pub, rustdoc::all)]

use std::sync::OnceLock;

/// The encoded `FileDescriptorSet` of `proto/` and its imports, with source info and custom
/// options (`google.api.http`, `yandex.cloud.*`): what reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// [`FILE_DESCRIPTOR_SET`], decoded once, with every well-known type besides (those our protos
/// do not import too, such as `google.protobuf.Empty`, so that an `Any` holding one resolves):
/// what the gateway builds its routes from.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: OnceLock<prost_reflect::DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the build embedded a valid descriptor set");
        let missing: Vec<_> = prost_reflect::DescriptorPool::global()
            .files()
            .filter(|f| pool.get_file_by_name(f.name()).is_none())
            .map(|f| f.file_descriptor_proto().clone())
            .collect();
        pool.add_file_descriptor_protos(missing)
            .expect("the well-known types fit any pool");
        pool
    })
}

macro_rules! package {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file, ".rs"));
        include!(concat!(env!("OUT_DIR"), "/", $file, ".serde.rs"));
    };
}

pub mod google {
    pub mod api {
        package!("google.api");
    }
    pub mod rpc {
        package!("google.rpc");
    }
}

pub mod yandex {
    pub mod cloud {
        package!("yandex.cloud");
        pub mod access {
            package!("yandex.cloud.access");
        }
        pub mod api {
            package!("yandex.cloud.api");
        }
        pub mod compute {
            pub mod v1 {
                package!("yandex.cloud.compute.v1");
            }
        }
        pub mod endpoint {
            package!("yandex.cloud.endpoint");
        }
        pub mod iam {
            pub mod v1 {
                package!("yandex.cloud.iam.v1");
            }
        }
        pub mod operation {
            package!("yandex.cloud.operation");
        }
    }
}
