//! [`GenerateStream`]: the events of one `Generate` call as a `Stream`, with the request
//! deadline enforced locally. Dropping it cancels the RPC, which the server treats as an abort.

use crate::error::ClientError;
use crate::events::GenerateEvent;
use crate::wire;
use bitnet_proto::serving as pb;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::Streaming;

type StartFuture = Pin<
    Box<
        dyn Future<Output = Result<tonic::Response<Streaming<pb::GenerateResponse>>, tonic::Status>>
            + Send,
    >,
>;

enum State {
    Starting(StartFuture),
    Streaming(Box<Streaming<pb::GenerateResponse>>),
    Done,
}

/// The events of one generation: chunks, then one `Complete` per sample. Yields at most one
/// error, after which it ends. Implements [`Stream`]; use `tokio_stream::StreamExt::next`.
pub struct GenerateStream {
    request_id: String,
    state: State,
    timeout: Option<Duration>,
    /// Armed on the first poll (the call starts then), so `generate` works outside a runtime.
    deadline: Option<Pin<Box<Sleep>>>,
    samples: u32,
    completed: u32,
}

impl GenerateStream {
    pub(crate) fn new(
        request_id: String,
        start: StartFuture,
        timeout: Option<Duration>,
        samples: u32,
    ) -> Self {
        Self {
            request_id,
            state: State::Starting(start),
            timeout,
            deadline: None,
            samples: samples.max(1),
            completed: 0,
        }
    }

    /// The request id (the one given, or the one the client made); pass it to
    /// [`crate::Client::abort`].
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fail(&mut self, error: ClientError) -> Poll<Option<Result<GenerateEvent, ClientError>>> {
        self.state = State::Done;
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for GenerateStream {
    type Item = Result<GenerateEvent, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if matches!(this.state, State::Done) {
            return Poll::Ready(None);
        }
        if let Some(after) = this.timeout {
            let sleep = this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
            if sleep.as_mut().poll(cx).is_ready() {
                return this.fail(ClientError::Timeout {
                    op: "generate",
                    after,
                });
            }
        }
        let timeout = this.timeout;
        loop {
            match &mut this.state {
                State::Starting(start) => match start.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(response)) => {
                        this.state = State::Streaming(Box::new(response.into_inner()));
                    }
                    Poll::Ready(Err(status)) => {
                        return this.fail(ClientError::from_status("generate", status, timeout));
                    }
                },
                State::Streaming(stream) => {
                    return match Pin::new(stream.as_mut()).poll_next(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(Ok(msg))) => match wire::event(msg, &this.request_id) {
                            Ok(event) => {
                                if matches!(event, GenerateEvent::Complete { .. }) {
                                    this.completed += 1;
                                }
                                Poll::Ready(Some(Ok(event)))
                            }
                            Err(error) => this.fail(error),
                        },
                        Poll::Ready(Some(Err(status))) => {
                            this.fail(ClientError::from_status("generate", status, timeout))
                        }
                        Poll::Ready(None) if this.completed < this.samples => {
                            let message = format!(
                                "stream of {} ended after {} of {} final messages",
                                this.request_id, this.completed, this.samples
                            );
                            this.fail(ClientError::protocol(message))
                        }
                        Poll::Ready(None) => {
                            this.state = State::Done;
                            Poll::Ready(None)
                        }
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl std::fmt::Debug for GenerateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateStream")
            .field("request_id", &self.request_id)
            .field("completed", &self.completed)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}
