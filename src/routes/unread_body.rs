//! A chunked request body its answer leaves unread — a 408 (it did not come in time), a 413
//! (too large to read), or any answer given without reading it (401, 404, 429) — ends the
//! connection with the answer. actix-web drains a chunked body whose reader was dropped for
//! as long as the client goes on sending it, with no time limit, and keeps the connection
//! for the next request meanwhile (found by black-box audits: stalled chunked bodies held
//! every connection the workers take, answered or not; a body answered 413 went on
//! streaming). So the body's reader is shared: the handler reads through one handle, and
//! when the answer is ready before the body ended the other goes with the answer's body, so
//! that actix finds the reader still there when the answer is written and closes the
//! connection after it (lingering at most `client_disconnect_timeout`, 1 s). A body with a
//! `Content-Length` is not drained: actix closes such a connection itself.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::TRANSFER_ENCODING;
use actix_web::web::Bytes;

/// The request's body, read by whoever holds a handle, and whether it ended.
#[derive(Clone)]
pub(super) struct Body(Rc<(RefCell<Payload>, Cell<bool>)>);

impl futures_util::Stream for Body {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // One reader polls at a time (the handler); the other handle only keeps it alive.
        let (payload, ended) = &*self.0;
        let next = Pin::new(&mut *payload.borrow_mut()).poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            ended.set(true);
        }
        next
    }
}

/// The request with a chunked body behind a shared handle, and the other handle (`None`:
/// no chunked body, nothing to keep).
pub(super) fn share(req: ServiceRequest) -> (ServiceRequest, Option<Body>) {
    if !req.headers().contains_key(TRANSFER_ENCODING) {
        return (req, None);
    }
    let (http, payload) = req.into_parts();
    let body = Body(Rc::new((RefCell::new(payload), Cell::new(false))));
    let reader: Pin<Box<dyn futures_util::Stream<Item = _>>> = Box::pin(body.clone());
    let reader = Payload::Stream { payload: reader };
    (ServiceRequest::from_parts(http, reader), Some(body))
}

/// For an answer ready before its request's chunked body ended, keep the body's reader with
/// the answer's own body until that is written (see the module's header): actix decides
/// whether to close once the answer's last byte is out.
pub(super) fn keep_if_unread<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    reader: Option<Body>,
) -> ServiceResponse<EitherBody<B, Holding>> {
    match reader {
        Some(reader) if !reader.0 .1.get() => res.map_body(|_, body| {
            EitherBody::right(Holding {
                body: BoxBody::new(body),
                _reader: reader,
            })
        }),
        _ => res.map_into_left_body(),
    }
}

/// An answer's body, with the request body's reader kept alive while it is written.
pub(super) struct Holding {
    body: BoxBody,
    _reader: Body,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
