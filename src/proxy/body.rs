//! Bodies on the hot path: a request body read before forwarding (bounded
//! in size and time), and the serving side's answer observed on its way to
//! the client, copied into the comparison's capture as it passes.
//!
//! Must never: hold the client's answer back to capture it, or let a
//! capture pass its limit.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::exchange::{CapturedResponse, FailureKind, SideResult, SkipReason};
use crate::mirror::{CaptureBuf, PrimaryObserver};
use crate::server::BoxError;
use crate::upstream::UpstreamBody;

/// Reads a request body into `capture` until it ends or the capture gives
/// up; returns what remains to be sent (the captured prefix plus the rest).
pub(super) async fn read_bounded(
    mut body: Incoming,
    capture: &mut CaptureBuf,
    pause: std::time::Duration,
) -> Result<PrefixedBody, BodyReadError> {
    let mut prefix: Vec<Frame<Bytes>> = Vec::new();
    // A body known to be over (none, or all its announced length read) needs no timed wait.
    while capture.overflow().is_none() && !body.is_end_stream() {
        // A client that stops sending (slowloris) is cut, not waited for.
        match tokio::time::timeout(pause, body.frame()).await {
            Err(_) => return Err(BodyReadError::TooSlow(pause)),
            Ok(None) => break,
            Ok(Some(frame)) => {
                // Trailers go on with the body; only data is compared.
                let frame = frame.map_err(BodyReadError::Broken)?;
                if let Some(data) = frame.data_ref() {
                    capture.push(data);
                }
                prefix.push(frame);
            }
        }
    }
    Ok(PrefixedBody { prefix, rest: body })
}

/// Why a request body could not be read before forwarding.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyReadError {
    #[error("the client sent nothing for {}", humantime::format_duration(*.0))]
    TooSlow(std::time::Duration),
    #[error("{0}")]
    Broken(hyper::Error),
}

/// A request body whose first frames were already read.
pub(super) struct PrefixedBody {
    prefix: Vec<Frame<Bytes>>,
    rest: Incoming,
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if !self.prefix.is_empty() {
            let frame = self.prefix.remove(0);
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .prefix
            .iter()
            .filter_map(Frame::data_ref)
            .map(|chunk| chunk.len() as u64)
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

/// The primary's answer on its way to the client, observed as it passes.
pub(super) struct ObservedBody {
    pub(super) inner: UpstreamBody,
    pub(super) capture: Option<CaptureBuf>,
    pub(super) pending: Option<Pending>,
}

pub(super) struct Pending {
    pub(super) observer: PrimaryObserver,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) started: Instant,
}

impl ObservedBody {
    fn complete(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let elapsed = pending.started.elapsed();
        match self.capture.take().map(CaptureBuf::finish) {
            // Not mirrored: the direct observer needs only the status and time.
            None => pending.observer.finish(
                SideResult::Uncaptured {
                    status: pending.status,
                    elapsed,
                    reason: SkipReason::MirrorOff,
                },
                None,
            ),
            Some(Err(reason)) => pending.observer.finish(
                SideResult::Uncaptured {
                    status: pending.status,
                    elapsed,
                    reason,
                },
                None,
            ),
            Some(Ok((body, reservation))) => pending.observer.finish(
                SideResult::Complete(CapturedResponse {
                    status: pending.status,
                    headers: pending.headers,
                    body,
                    elapsed,
                }),
                Some(reservation),
            ),
        }
    }

    fn fail(&mut self, message: String) {
        if let Some(pending) = self.pending.take() {
            pending.observer.finish(
                SideResult::Failed {
                    kind: FailureKind::Body,
                    message,
                    elapsed: pending.started.elapsed(),
                },
                None,
            );
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(capture), Some(data)) = (this.capture.as_mut(), frame.data_ref()) {
                    capture.push(data);
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(failure)) => {
                // The client's connection is aborted with the classified
                // message (which leaves out the URL and its query).
                this.fail(failure.message.clone());
                Poll::Ready(Some(Err(failure.message.into())))
            }
            None => {
                this.complete();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // A body with nothing left (HEAD, 204, empty) may be dropped unpolled:
        // that is a complete answer. Anything else means the client left
        // early, and the observer records the request as abandoned.
        if self.inner.is_end_stream() {
            self.complete();
        }
    }
}
