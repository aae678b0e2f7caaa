//! Request bodies, bounded in size and in time, on every route: a client that sends its
//! headers and then trickles its body, or stops, holds a connection (and a file
//! descriptor) for `Options::body_timeout` at most, signed or not.
//!
//! actix reads a body only when a handler asks. Two cases need care. `POST /wechat` reads
//! its `Content-Length` body through `read`, under the deadline. A chunked body is read here
//! by `bound_chunked`, on any route, before the handler: a handler that leaves a chunked
//! body unread (any other route) or gives up on one makes actix drain the rest before the
//! next request, with no time limit at all.

use actix_web::body::{BodyStream, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, ResponseError};
use std::time::Instant;

use super::{AppState, ServiceError};

/// Reads a whole body, refusing it past `body_limit` (at once when `Content-Length` says
/// so) or when it has not all arrived `body_timeout` after `started`.
pub(crate) async fn read(
    state: &AppState,
    req: &HttpRequest,
    payload: &mut web::Payload,
    started: Instant,
) -> Result<web::Bytes, ServiceError> {
    let limit = state.options.body_limit;
    if let Some(declared) = req.headers().get(CONTENT_LENGTH) {
        let length = declared
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ServiceError::Body("Content-Length is not a number".into()))?;
        if length > limit as u64 {
            return Err(ServiceError::BodyTooLarge(limit));
        }
    }
    read_stream(state, BodyStream::new(payload), started).await
}

async fn read_stream<B: MessageBody>(
    state: &AppState,
    body: B,
    started: Instant,
) -> Result<web::Bytes, ServiceError> {
    let limit = state.options.body_limit;
    let deadline = tokio::time::Instant::from_std(started + state.options.body_timeout);
    match tokio::time::timeout_at(deadline, actix_web::body::to_bytes_limited(body, limit)).await {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(e))) => Err(ServiceError::Body(e.into().to_string())),
        Ok(Err(_)) => Err(ServiceError::BodyTooLarge(limit)),
        Err(_) => Err(ServiceError::BodyTimeout),
    }
}

/// A body not read to its end, kept with the response that refuses it. While its reader
/// lives, actix closes the connection after an empty response rather than drain the rest.
pub(crate) struct Unread(#[allow(dead_code, reason = "held, never read")] pub(crate) Payload);

/// Middleware: reads a chunked body in full, within the bounds, before any handler runs,
/// and hands it on in memory; refuses it (413, 408, 400) otherwise. Other requests pass
/// untouched, at the cost of one header lookup.
pub(crate) async fn bound_chunked(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !req.headers().contains_key(TRANSFER_ENCODING) {
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
    match read_stream(&state, BodyStream::new(&mut payload), started).await {
        Ok(body) => {
            req.set_payload(Payload::from(body));
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            super::handlers::count_refused(&state, &e);
            let mut response = e.error_response();
            response.extensions_mut().insert(Unread(payload));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
