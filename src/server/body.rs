//! Request bodies, bounded in size and in time, on every route: a client that sends its
//! headers and then trickles its body, or stops, holds a connection (and a file
//! descriptor) for `Options::body_timeout` at most, signed or not.
//!
//! actix reads a body only when a handler asks, and a chunked body that a handler leaves
//! unread makes actix drain the rest before the next request, with no time limit at all.
//! `POST /wechat` reads its body through `read`, under the deadline, and refuses through
//! `refuse_unread`, which makes actix close instead of drain. Every other route (the admin
//! port's included: a stalled `/api/try` body held its connection for ever) is wrapped in
//! `bound_bodies`, which reads a body, chunked or of a given length, before the handler
//! (the push path does not pay for the middleware).

use actix_web::body::{BodyStream, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, ResponseError};
use std::time::Instant;

use super::{AppState, ServiceError};

/// A bigger body limit for the routes of a scope than the push's (`Options::body_limit`):
/// the admin port's drafts carry template files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit(pub(crate) usize);

/// The body limit of `req`'s route.
fn limit_of(state: &AppState, req: &HttpRequest) -> usize {
    req.app_data::<Limit>()
        .map_or(state.options.body_limit, |Limit(limit)| *limit)
}

/// Reads a whole body, refusing it past `body_limit` (at once when `Content-Length` says
/// so) or when it has not all arrived `body_timeout` after `started`.
pub(crate) async fn read(
    state: &AppState,
    req: &HttpRequest,
    payload: &mut web::Payload,
    started: Instant,
) -> Result<web::Bytes, ServiceError> {
    if let Some(e) = declared_too_large(state, req) {
        return Err(e);
    }
    read_stream(
        state,
        BodyStream::new(payload),
        started,
        state.options.body_limit,
    )
    .await
}

async fn read_stream<B: MessageBody>(
    state: &AppState,
    body: B,
    started: Instant,
    limit: usize,
) -> Result<web::Bytes, ServiceError> {
    let deadline = tokio::time::Instant::from_std(started + state.options.body_timeout);
    match tokio::time::timeout_at(deadline, actix_web::body::to_bytes_limited(body, limit)).await {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(e))) => Err(ServiceError::Body(e.into().to_string())),
        Ok(Err(_)) => Err(ServiceError::BodyTooLarge(limit)),
        Err(_) => Err(ServiceError::BodyTimeout),
    }
}

/// 413 at once for a `Content-Length` past the limit (or 400 for one that is not a number).
fn declared_too_large(state: &AppState, req: &HttpRequest) -> Option<ServiceError> {
    let declared = req.headers().get(CONTENT_LENGTH)?;
    let limit = limit_of(state, req);
    match declared.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
        None => Some(ServiceError::Body("Content-Length is not a number".into())),
        Some(length) if length > limit as u64 => Some(ServiceError::BodyTooLarge(limit)),
        Some(_) => None,
    }
}

/// A body not read to its end, kept with the response that refuses it. While its reader
/// lives, actix closes the connection after an empty response rather than drain the rest.
struct Unread(#[allow(dead_code, reason = "held, never read")] Payload);

/// The response refusing a request whose body was not read to its end: `e`'s, keeping the
/// body's reader, and empty when the body is chunked (actix decides whether to drain after
/// a response with a body, when the reader is gone), so that the connection is closed
/// rather than kept for a rest that may never come.
pub(crate) fn refuse_unread(
    e: &ServiceError,
    req: &HttpRequest,
    payload: web::Payload,
) -> actix_web::HttpResponse {
    let mut response = e.error_response();
    if req.headers().contains_key(TRANSFER_ENCODING) {
        response = actix_web::HttpResponse::build(response.status())
            .force_close()
            .finish();
    }
    response
        .extensions_mut()
        .insert(Unread(payload.into_inner()));
    response
}

/// Middleware: reads a body (chunked, or with a `Content-Length` above 0) in full, within
/// the bounds, before any handler runs, and hands it on in memory; refuses it (413, 408,
/// 400) otherwise. Requests without a body pass untouched, at the cost of two header
/// lookups.
pub(crate) async fn bound_bodies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let sized = req
        .headers()
        .get(CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0");
    if !sized && !req.headers().contains_key(TRANSFER_ENCODING) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let started = Instant::now();
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let mut payload = std::mem::replace(req.parts_mut().1, Payload::None);
    let read = match declared_too_large(&state, req.request()) {
        Some(e) => Err(e),
        None => {
            let limit = limit_of(&state, req.request());
            read_stream(&state, BodyStream::new(&mut payload), started, limit).await
        }
    };
    match read {
        Ok(body) => {
            req.set_payload(Payload::from(body));
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            super::refusal::count_refused(&state, None, &e);
            let mut response = e.error_response();
            response.extensions_mut().insert(Unread(payload));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
