//! Unit tests of `bitnet-proto`: wire round trips (proto3 `optional` presence) and the
//! descriptor set used for reflection.

use super::serving::{generate_request::Input, GenerateRequest, SamplingParams, TokenIds};
use super::{
    FILE_DESCRIPTOR_SET, SERVING_PACKAGE, SERVING_SERVICE, WORKER_PACKAGE, WORKER_SERVICE,
};
use prost::Message;

#[test]
fn package_names_are_versioned() {
    assert!(SERVING_PACKAGE.ends_with(".v1"));
    assert!(WORKER_PACKAGE.ends_with(".v1"));
    assert!(SERVING_SERVICE.starts_with(SERVING_PACKAGE));
    assert!(WORKER_SERVICE.starts_with(WORKER_PACKAGE));
}

fn round_trip(req: &GenerateRequest) -> GenerateRequest {
    GenerateRequest::decode(req.encode_to_vec().as_slice()).expect("decodes")
}

#[test]
fn optional_fields_keep_presence_through_the_wire() {
    let set = GenerateRequest {
        request_id: "r1".into(),
        input: Some(Input::Text("Hello".into())),
        sampling: Some(SamplingParams {
            // Zero values that proto3 would drop without `optional`.
            temperature: Some(0.0),
            top_k: Some(0),
            seed: Some(0),
            max_tokens: Some(16),
            ignore_eos: Some(false),
            stop: vec!["\n\n".into()],
            ..Default::default()
        }),
        chat: false,
    };
    let back = round_trip(&set);
    assert_eq!(back, set);
    let s = back.sampling.unwrap();
    assert_eq!(s.temperature, Some(0.0), "explicit greedy must survive");
    assert_eq!(s.top_k, Some(0));
    assert_eq!(s.seed, Some(0));
    assert_eq!(s.ignore_eos, Some(false));
    assert_eq!(s.top_p, None, "unset stays unset");
    assert_eq!(s.min_p, None);
    assert_eq!(s.n, None);
    assert_eq!(s.logprobs, None);

    let unset = GenerateRequest {
        request_id: String::new(),
        input: Some(Input::TokenIds(TokenIds { ids: vec![1, 2, 3] })),
        sampling: Some(SamplingParams::default()),
        chat: false,
    };
    let back = round_trip(&unset);
    assert_eq!(back, unset);
    let s = back.sampling.unwrap();
    assert!(s.temperature.is_none() && s.max_tokens.is_none() && s.seed.is_none());
}

#[test]
fn descriptor_set_holds_both_services() {
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid set");
    let services: Vec<String> = fds
        .file
        .iter()
        .flat_map(|f| {
            let pkg = f.package().to_string();
            f.service.iter().map(move |s| format!("{pkg}.{}", s.name()))
        })
        .collect();
    assert!(
        services.iter().any(|s| s == SERVING_SERVICE),
        "{services:?}"
    );
    assert!(services.iter().any(|s| s == WORKER_SERVICE), "{services:?}");
    let serving = fds
        .file
        .iter()
        .find(|f| f.package() == SERVING_PACKAGE)
        .unwrap();
    let methods: Vec<&str> = serving.service[0].method.iter().map(|m| m.name()).collect();
    for m in [
        "Generate",
        "Abort",
        "GetModelInfo",
        "GetServerInfo",
        "Tokenize",
        "Detokenize",
    ] {
        assert!(methods.contains(&m), "missing {m} in {methods:?}");
    }
}

#[test]
fn the_nccl_unique_id_crosses_the_wire_byte_for_byte() {
    use super::worker::{CollectiveKind, InitCollectiveRequest, NcclUniqueIdResponse};
    // Zeros and bytes above 127 among them, as ncclGetUniqueId may produce.
    let id: Vec<u8> = (0..128u32).map(|i| (i * 37 % 256) as u8).collect();
    let made = NcclUniqueIdResponse {
        nccl_unique_id: id.clone(),
    };
    let made = NcclUniqueIdResponse::decode(made.encode_to_vec().as_slice()).expect("decodes");
    let init = InitCollectiveRequest {
        rank: 1,
        world_size: 2,
        nccl_unique_id: made.nccl_unique_id,
        kind: CollectiveKind::Nccl as i32,
        ..Default::default()
    };
    let back = InitCollectiveRequest::decode(init.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(back.nccl_unique_id, id);
    assert_eq!(back.kind(), CollectiveKind::Nccl);
}
