//! The body wrappers. The response body: frames pass through unchanged (byte-identical, still
//! streaming) while up to the cap are kept for the record, which is finished at the end of the
//! body or when the body is dropped early. The request body: the client's body as the handler
//! would have seen it without the layer, read first when the layer records it, teed otherwise.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Error type of [`AuditBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) trait Finish: Send {
    /// Called once with the kept bytes, the total size seen and whether the body ended normally.
    fn finish(self: Box<Self>, kept: Bytes, total: u64, complete: bool);
}

pub(crate) struct Tee {
    kept: BytesMut,
    total: u64,
    cap: usize,
    finish: Option<Box<dyn Finish>>,
}

impl Tee {
    pub(crate) fn new(cap: usize, finish: Box<dyn Finish>) -> Self {
        Tee {
            kept: BytesMut::new(),
            total: 0,
            cap,
            finish: Some(finish),
        }
    }

    fn push(&mut self, data: &Bytes) {
        self.total += data.len() as u64;
        // Past the cap nothing more is kept (the record gets a marker instead).
        if self.kept.len() + data.len() <= self.cap {
            self.kept.extend_from_slice(data);
        } else {
            self.kept.clear();
            self.cap = 0;
        }
    }

    fn done(&mut self, complete: bool) {
        if let Some(f) = self.finish.take() {
            f.finish(
                std::mem::take(&mut self.kept).freeze(),
                self.total,
                complete,
            );
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that passes every frame through and feeds the audit record.
    pub struct AuditBody<B> {
        #[pin]
        inner: Either<Full<Bytes>, B>,
        tee: Option<Tee>,
    }

    impl<B> PinnedDrop for AuditBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // A body dropped before its end (client gone, HEAD request) still finishes the record.
            if let Some(tee) = this.project().tee.as_mut() {
                tee.done(false);
            }
        }
    }
}

impl<B> AuditBody<B> {
    pub(crate) fn passthrough(inner: B) -> Self {
        AuditBody {
            inner: Either::Right(inner),
            tee: None,
        }
    }

    pub(crate) fn tee(inner: B, tee: Tee) -> Self {
        AuditBody {
            inner: Either::Right(inner),
            tee: Some(tee),
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        AuditBody {
            inner: Either::Left(Full::new(bytes)),
            tee: None,
        }
    }
}

/// An empty body: what outer layers that answer on their own (CORS preflight, timeouts) build.
impl<B> Default for AuditBody<B> {
    fn default() -> Self {
        AuditBody::full(Bytes::new())
    }
}

impl<B> std::fmt::Debug for AuditBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBody")
            .field("recording", &self.tee.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for AuditBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if let Some(tee) = this.tee.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        tee.push(data);
                    }
                    // Servers stop polling once the body says it has ended, so the end is taken
                    // from `is_end_stream` too, not only from a final `None`.
                    if this.inner.is_end_stream() {
                        tee.done(true);
                    }
                }
                Poll::Ready(Some(Err(_))) => tee.done(false),
                Poll::Ready(None) => tee.done(true),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the layer keeps of a request body while it streams to the handler (bodies whose length
/// is not announced): up to the cap, with the outcome of the read.
#[derive(Debug, Default)]
pub(crate) struct RequestTee {
    pub(crate) kept: BytesMut,
    pub(crate) total: u64,
    pub(crate) cap: usize,
    pub(crate) over_cap: bool,
    /// The read error the handler saw, if any.
    pub(crate) error: Option<String>,
    /// The body was read to its end.
    pub(crate) complete: bool,
}

impl RequestTee {
    pub(crate) fn new(cap: usize) -> Self {
        RequestTee {
            cap,
            ..Default::default()
        }
    }

    fn push(&mut self, data: &Bytes) {
        self.total += data.len() as u64;
        if !self.over_cap && self.kept.len() + data.len() <= self.cap {
            self.kept.extend_from_slice(data);
        } else {
            self.over_cap = true;
            self.kept = BytesMut::new();
        }
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        /// The client's body, passed through (and teed when a tee is set).
        Stream { #[pin] inner: B },
        /// A body the layer read before the handler: its bytes, then the error the read ended
        /// with, if it did, so the handler sees what it would have seen without the layer.
        Buffered { data: Option<Bytes>, error: Option<BoxError> },
    }
}

pin_project_lite::pin_project! {
    /// The request body the inner service receives: the client's body, unchanged, whether the
    /// layer read it first (small form and JSON bodies, to record them) or lets it stream.
    ///
    /// A wrapper of the layer's own, so that the layer works over any body type (hyper's
    /// `Incoming` included) without asking it to be built from bytes.
    pub struct AuditRequestBody<B> {
        #[pin]
        kind: Kind<B>,
        tee: Option<Arc<Mutex<RequestTee>>>,
    }
}

impl<B> AuditRequestBody<B> {
    /// The body as it came.
    pub fn new(inner: B) -> Self {
        AuditRequestBody {
            kind: Kind::Stream { inner },
            tee: None,
        }
    }

    pub(crate) fn teed(inner: B, tee: Arc<Mutex<RequestTee>>) -> Self {
        AuditRequestBody {
            kind: Kind::Stream { inner },
            tee: Some(tee),
        }
    }

    pub(crate) fn buffered(data: Bytes, error: Option<BoxError>) -> Self {
        AuditRequestBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                error,
            },
            tee: None,
        }
    }
}

impl<B> std::fmt::Debug for AuditRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditRequestBody").finish_non_exhaustive()
    }
}

impl<B> Body for AuditRequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Buffered { data, error } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => error.take().map(Err),
            }),
            KindProj::Stream { mut inner } => {
                let polled = inner
                    .as_mut()
                    .poll_frame(cx)
                    .map(|o| o.map(|r| r.map_err(Into::into)));
                if let Some(tee) = this.tee {
                    let mut tee = tee.lock().unwrap_or_else(|p| p.into_inner());
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(data) = frame.data_ref() {
                                tee.push(data);
                            }
                            // A server may stop polling once the body says it has ended.
                            if inner.is_end_stream() {
                                tee.complete = true;
                            }
                        }
                        Poll::Ready(Some(Err(e))) => tee.error = Some(e.to_string()),
                        Poll::Ready(None) => tee.complete = true,
                        Poll::Pending => {}
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stream { inner } => inner.is_end_stream(),
            Kind::Buffered { data, error } => data.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stream { inner } => inner.size_hint(),
            Kind::Buffered { data, error: None } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Buffered { .. } => SizeHint::default(),
        }
    }
}
