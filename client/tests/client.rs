//! End-to-end tests of `bitnet-client` against the in-process mock server of `mock/`, over a
//! real localhost TCP connection: streaming, collecting, abort, cancellation on drop, info
//! calls, error mapping, timeouts, and the health and reflection services next to `Serving`.

mod mock;

use bitnet_client::{
    Client, ClientError, ClientOptions, Code, FinishReason, GenerateEvent, GenerateParams,
    SamplingParams, Usage,
};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

async fn connect(mock: &mock::Mock) -> Client {
    let addr = mock::spawn(mock.clone()).await;
    Client::connect(&addr.to_string(), ClientOptions::default())
        .await
        .expect("connects to the mock")
}

#[tokio::test]
async fn generate_streams_chunks_then_complete() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let params = GenerateParams::text("say hello")
        .with_request_id("req-1")
        .with_sampling(SamplingParams::greedy().max_tokens(3).logprobs(1));
    let mut stream = client.generate(params);
    assert_eq!(stream.request_id(), "req-1");
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.expect("no error"));
    }
    assert_eq!(events.len(), 3, "{events:?}");
    match &events[0] {
        GenerateEvent::Chunk {
            index,
            token_ids,
            text,
            usage,
            logprobs,
        } => {
            assert_eq!(
                (*index, token_ids.as_slice(), text.as_str()),
                (0, &[1, 2][..], "Hel")
            );
            assert_eq!(usage.prompt_tokens, 2);
            assert_eq!(usage.completion_tokens, 2);
            assert_eq!(logprobs.len(), 2);
            assert_eq!(logprobs[0].sampled.token_id, 1);
            assert_eq!(logprobs[0].top[0].token_id, 101);
        }
        other => panic!("expected a chunk, got {other:?}"),
    }
    assert_eq!(
        events[2],
        GenerateEvent::Complete {
            index: 0,
            output_ids: vec![1, 2, 3],
            finish_reason: FinishReason::Length,
            usage: Usage {
                prompt_tokens: 2,
                completion_tokens: 3,
                cached_tokens: 0
            },
            matched_stop: None,
        }
    );
    // The typed sampling params reached the server as proto3 optionals.
    let seen = mock.seen.lock().unwrap();
    let req = seen.last_request.as_ref().unwrap();
    assert_eq!(req.request_id, "req-1");
    let s = req.sampling.as_ref().unwrap();
    assert_eq!(s.temperature, Some(0.0), "explicit 0 must be sent");
    assert_eq!(s.max_tokens, Some(3));
    assert_eq!(s.top_p, None, "unset must stay unset");
    assert_eq!(s.seed, None);
}

#[tokio::test]
async fn generate_text_collects_every_sample() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let params = GenerateParams::token_ids(vec![5, 6, 7, 8])
        .with_sampling(SamplingParams::new().n(2).stop("\n").seed(7));
    let out = client.generate_text(params).await.unwrap();
    assert!(out.request_id.starts_with("cli-"), "{}", out.request_id);
    assert_eq!(out.choices.len(), 2);
    for (i, choice) in out.choices.iter().enumerate() {
        assert_eq!(choice.index, i as u32);
        assert_eq!(choice.text, "Hello");
        assert_eq!(choice.output_ids, vec![1, 2, 3]);
        assert_eq!(choice.finish_reason, FinishReason::Stop);
        assert_eq!(choice.matched_stop.as_deref(), Some("\n"));
        assert_eq!(choice.usage.prompt_tokens, 4);
        assert_eq!(choice.usage.completion_tokens, 3);
    }
    assert_eq!(out.text(), "Hello");
    let seen = mock.seen.lock().unwrap();
    assert_eq!(
        seen.last_request.as_ref().unwrap().request_id,
        out.request_id
    );
}

#[tokio::test]
async fn client_made_request_ids_are_unique() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let a = client.generate(GenerateParams::text("a"));
    let b = client.generate(GenerateParams::text("a"));
    assert_ne!(a.request_id(), b.request_id());
}

#[tokio::test]
async fn empty_prompt_is_invalid_argument_and_the_next_request_works() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let mut stream = client.generate(GenerateParams::text(""));
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(err.is_invalid_argument(), "{err}");
    match &err {
        ClientError::Status { op, code, message } => {
            assert_eq!((*op, *code), ("generate", Code::InvalidArgument));
            assert_eq!(message, "prompt is empty");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
    let err = client
        .generate_text(GenerateParams::token_ids(Vec::new()))
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument());
    let ok = client
        .generate_text(GenerateParams::text("hi"))
        .await
        .unwrap();
    assert_eq!(ok.text(), "Hello");
}

#[tokio::test]
async fn in_band_error_becomes_a_stream_error() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let mut stream = client.generate(GenerateParams::text("fail").with_request_id("f"));
    assert!(matches!(
        stream.next().await,
        Some(Ok(GenerateEvent::Chunk { .. }))
    ));
    let err = stream.next().await.unwrap().unwrap_err();
    match &err {
        ClientError::Stream {
            request_id,
            code,
            message,
            details,
        } => {
            assert_eq!(request_id, "f");
            assert_eq!(code, "INTERNAL");
            assert_eq!(message, "worker rank 1 died");
            assert_eq!(details, "rank=1");
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert_eq!(err.code(), Some(Code::Internal));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn stream_ending_without_complete_is_a_protocol_error() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let err = client
        .generate_text(GenerateParams::text("truncated"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn abort_ends_a_running_stream_with_finish_reason_abort() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let mut stream = client.generate(GenerateParams::text("slow").with_request_id("s1"));
    assert!(matches!(
        stream.next().await,
        Some(Ok(GenerateEvent::Chunk { .. }))
    ));
    let aborted = client.abort(["s1", "unknown"]).await.unwrap();
    assert_eq!(aborted, 1, "only s1 was running");
    match stream.next().await {
        Some(Ok(GenerateEvent::Complete { finish_reason, .. })) => {
            assert_eq!(finish_reason, FinishReason::Abort)
        }
        other => panic!("expected the abort completion, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
    assert_eq!(mock.seen.lock().unwrap().aborted, vec!["s1", "unknown"]);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_request_on_the_server() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let mut stream = client.generate(GenerateParams::text("slow").with_request_id("d1"));
    assert!(matches!(
        stream.next().await,
        Some(Ok(GenerateEvent::Chunk { .. }))
    ));
    drop(stream);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if mock
            .seen
            .lock()
            .unwrap()
            .cancelled
            .contains(&"d1".to_string())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never saw the client go away");
}

#[tokio::test]
async fn model_info_server_info_and_tokenizer_calls() {
    let mock = mock::Mock::default();
    let client = connect(&mock).await;
    let info = client.model_info().await.unwrap();
    assert_eq!(info.family, "bitnet");
    assert_eq!(info.tensor_parallel, 2);
    assert_eq!(info.eos_token_ids, vec![2]);
    assert_eq!(info.block_size, 16);
    let server = client.server_info().await.unwrap();
    assert_eq!(server.kv_blocks_total, 64);
    assert_eq!(server.uptime, Duration::from_millis(12_500));
    assert!(server.serving);
    let ids = client.tokenize("hi", false).await.unwrap();
    assert_eq!(ids, vec![104, 105]);
    assert_eq!(client.detokenize(ids, true).await.unwrap(), "hi");
    let err = client.detokenize(vec![9999], true).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err}");
}

#[tokio::test]
async fn request_timeout_is_sent_as_deadline_and_enforced() {
    let mock = mock::Mock::default();
    let addr = mock::spawn(mock.clone()).await;
    let options = ClientOptions::default().with_request_timeout(Duration::from_millis(100));
    let client = Client::connect(&addr.to_string(), options).await.unwrap();
    // server_info answers after 300 ms.
    let err = client.server_info().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { op: "server_info", after } if after == Duration::from_millis(100)),
        "{err:?}"
    );
    // A slow stream hits the deadline too, and the server saw the grpc-timeout header.
    let mut stream = client.generate(GenerateParams::text("slow"));
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event);
    }
    let err = last.unwrap().unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { op: "generate", .. }),
        "{err:?}"
    );
    assert!(mock.seen.lock().unwrap().last_grpc_timeout.is_some());
}

#[tokio::test]
async fn request_timeout_against_a_server_that_never_answers() {
    let addr = mock::spawn_silent().await;
    let options = ClientOptions::default()
        .with_connect_timeout(Duration::from_millis(500))
        .with_request_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let err = match Client::connect(&addr.to_string(), options).await {
        // The HTTP/2 handshake may or may not wait for the server's settings.
        Err(err) => err,
        Ok(client) => client.model_info().await.unwrap_err(),
    };
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_fast() {
    let addr = mock::closed_port().await;
    let options = ClientOptions::default().with_connect_timeout(Duration::from_millis(500));
    let start = Instant::now();
    let err = Client::connect(&format!("http://{addr}"), options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Connect { .. } | ClientError::Timeout { op: "connect", .. }
        ),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let err = Client::connect("no-port", options).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidAddress { .. }), "{err:?}");
}

#[tokio::test]
async fn health_and_reflection_are_served_next_to_serving() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let addr = mock::spawn(mock::Mock::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: bitnet_proto::SERVING_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [bitnet_proto::SERVING_SERVICE, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

#[test]
fn a_stream_made_outside_the_runtime_runs_inside_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = mock::Mock::default();
    let options = ClientOptions::default().with_request_timeout(Duration::from_secs(5));
    let client = rt.block_on(async {
        let addr = mock::spawn(mock.clone()).await;
        Client::connect(&addr.to_string(), options).await.unwrap()
    });
    // Built with no runtime entered: the deadline is armed on the first poll.
    let stream = client.generate(GenerateParams::text("hi"));
    let events: Vec<_> = rt.block_on(stream.collect());
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(Result::is_ok), "{events:?}");
}
