//! A reply's body as tonic reads it: its DATA frames, each handed back to flow control as it is
//! read, then its trailers (where gRPC puts the status); bounded in size and in time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame};
use tokio::time::Sleep;

use super::UpstreamError;

/// Bytes of gRPC framing before each message: a compression flag and a 4-byte length.
const MESSAGE_PREFIX: usize = 5;

/// The body of a backend's reply.
#[derive(Debug)]
pub(crate) struct Reply {
    stream: h2::RecvStream,
    data_done: bool,
    /// DATA bytes still allowed: one message of the largest size taken, and its prefix.
    allowance: usize,
    limit: usize,
    /// The call's deadline, when it has one, with how long it was.
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
}

impl Reply {
    pub(super) fn new(
        stream: h2::RecvStream,
        limit: usize,
        deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    ) -> Self {
        Self {
            stream,
            data_done: false,
            allowance: limit.saturating_add(MESSAGE_PREFIX),
            limit,
            deadline,
        }
    }

    fn poll_data_or_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is gone, which the next poll reports.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    let Some(left) = self.allowance.checked_sub(data.len()) else {
                        // Dropping the reply resets the stream: the rest is never read.
                        return Poll::Ready(Some(Err(UpstreamError::ReplyTooLarge {
                            limit: self.limit,
                        })));
                    };
                    self.allowance = left;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

impl HttpBody for Reply {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        if let Poll::Ready(frame) = self.poll_data_or_trailers(cx) {
            return Poll::Ready(frame);
        }
        if let Some((sleep, after)) = &mut self.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(UpstreamError::Deadline(*after))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}
