//! The response body wrapper: frames pass through unchanged (byte-identical, still streaming,
//! D43) while up to the cap are kept for the record, which is finished at the end of the body or
//! when the body is dropped early.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use std::pin::Pin;
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
