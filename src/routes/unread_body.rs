//! A request body its answer leaves unread — 408 (it did not come in time), 413 (too large
//! to read) — ends the connection with the answer. actix-web drains a chunked body whose
//! reader was dropped for as long as the client goes on sending it, with no time limit, and
//! keeps the connection for the next request meanwhile (found by a black-box audit: stalled
//! chunked bodies, each answered 408, held every connection the workers take; a body
//! answered 413 went on streaming). So the body's reader is shared: the handler reads
//! through one handle, and for such an answer the other goes with the response, so that
//! actix finds the reader still there when it writes the answer and closes the connection
//! after it (lingering at most `client_disconnect_timeout`, 1 s).

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;

/// The request's body, read by whoever holds a handle.
#[derive(Clone)]
pub(super) struct Body(Rc<RefCell<Payload>>);

impl futures_util::Stream for Body {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // One reader polls at a time (the handler); the other handle only keeps it alive.
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

/// The request with its body behind a shared handle, and the other handle.
pub(super) fn share(req: ServiceRequest) -> (ServiceRequest, Body) {
    let (http, payload) = req.into_parts();
    let body = Body(Rc::new(RefCell::new(payload)));
    let reader: Pin<Box<dyn futures_util::Stream<Item = _>>> = Box::pin(body.clone());
    let reader = Payload::Stream { payload: reader };
    (ServiceRequest::from_parts(http, reader), body)
}

/// For an answer that leaves the body unread, keep the body's reader with the response's
/// own body until that is written (see the module's header): actix decides whether to close
/// once the answer's last byte is out.
pub(super) fn keep_if_unread<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    reader: Body,
) -> ServiceResponse<EitherBody<B, Holding>> {
    if matches!(
        res.status(),
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        res.map_body(|_, body| {
            EitherBody::right(Holding {
                body: BoxBody::new(body),
                _reader: reader,
            })
        })
    } else {
        res.map_into_left_body()
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
