//! JSON round trips of Image and Operation against golden fixtures: int64 as strings, `Z`
//! timestamps with nanoseconds, enums by name, FieldMask as a string, `@type` on every Any
//! (metadata, response and error details).

use std::collections::BTreeMap;

use compute_gateway::json::{Any, FieldMask, Timestamp};
use compute_gateway::pb::google::rpc::{self, BadRequest, bad_request::FieldViolation};
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::operation::{Operation, operation};
use serde_json::Value;

fn image() -> Image {
    Image {
        id: "fd8img0000000000001".into(),
        folder_id: "b1gfolder".into(),
        created_at: Some(Timestamp {
            seconds: 1_736_848_800,
            nanos: 123_456_789,
        }),
        name: "my-image".into(),
        description: "golden".into(),
        labels: BTreeMap::from([("env".into(), "prod".into()), ("a".into(), "1".into())]),
        family: "ubuntu".into(),
        size: 10_737_418_240,
        storage_size: 2_147_483_648,
        min_disk_size: 10_737_418_240,
        product_ids: vec!["f2e".into()],
        status: image::Status::Ready as i32,
        os: Some(Os {
            r#type: os::Type::Windows as i32,
            nvidia: Some(Nvidia {
                driver: "550".into(),
            }),
        }),
        pooled: true,
        hardware_generation: Some(HardwareGeneration {
            features: Some(hardware_generation::Features::LegacyFeatures(
                LegacyHardwareFeatures {
                    pci_topology: PciTopology::V2 as i32,
                },
            )),
        }),
        kms_key: Some(KmsKey {
            key_id: "k".into(),
            version_id: "v".into(),
        }),
    }
}

fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    fixture: &str,
) {
    let want: Value = serde_json::from_str(fixture).expect("fixture is JSON");
    let got = serde_json::to_value(value).expect("renders");
    assert_eq!(got, want, "rendering differs from the fixture");
    let back: T = serde_json::from_value(want).expect("the fixture parses back");
    assert_eq!(&back, value, "round trip");
}

#[test]
fn image_matches_its_fixture() {
    check(&image(), include_str!("fixtures/image.json"));
}

#[test]
fn operations_match_their_fixtures() {
    let done = Operation {
        id: "epdop00000000000001".into(),
        description: "Update image".into(),
        created_at: Some(Timestamp {
            seconds: 1_736_848_800,
            nanos: 0,
        }),
        created_by: "aje0000000000000000".into(),
        modified_at: Some(Timestamp {
            seconds: 1_736_848_800,
            nanos: 500_000_000,
        }),
        done: true,
        metadata: Some(Any::pack(&UpdateImageMetadata {
            image_id: "fd8img0000000000001".into(),
        })),
        result: Some(operation::Result::Response(Any::pack(&image()))),
    };
    check(&done, include_str!("fixtures/operation_update.json"));
    let failed = Operation {
        result: Some(operation::Result::Error(rpc::Status {
            code: 3,
            message: "invalid request".into(),
            details: vec![Any::pack(&BadRequest {
                field_violations: vec![FieldViolation {
                    field: "name".into(),
                    description: "bad".into(),
                }],
            })],
        })),
        ..done
    };
    check(&failed, include_str!("fixtures/operation_error.json"));
    let req = UpdateImageRequest {
        image_id: "fd8img0000000000001".into(),
        update_mask: Some(FieldMask::new(["name", "min_disk_size"])),
        name: "n".into(),
        min_disk_size: 4_194_304,
        ..Default::default()
    };
    let json = serde_json::to_value(&req).expect("renders");
    assert_eq!(json["updateMask"], "name,minDiskSize");
    assert_eq!(json["minDiskSize"], "4194304");
}
