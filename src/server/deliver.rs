//! `POST /-/deliver/ACCOUNT/TOKEN` on the public listener: a slow call's answer, delivered
//! by its service after it answered `202 Accepted` (`act::deliver`). 200 once; 403 for a
//! URL wxrules did not sign; 410 once used or expired; each refusal logged within the
//! refusals' rate limit.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{body, AppState};

/// Where deliveries arrive, below the base given to services (`--deliver-url`).
pub(super) const PREFIX: &str = "/-/deliver";

pub(super) async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let rest = req.path().strip_prefix(PREFIX).unwrap_or_default();
    let mut parts = rest.trim_start_matches('/').splitn(2, '/');
    let (Some(account), Some(token)) = (parts.next(), parts.next()) else {
        return HttpResponse::NotFound().json(json!({"error": "no such delivery URL"}));
    };
    let account = percent_encoding::percent_decode_str(account).decode_utf8_lossy();
    let Some(live) = state.accounts().by_name(&account) else {
        return HttpResponse::NotFound().json(json!({"error": "no such account"}));
    };
    let body = match body::read(&state, &req, &mut payload, started).await {
        Ok(body) => body,
        Err(e) => return body::refuse_unread(&e, &req, payload),
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({"error": "the delivery is not JSON: POST the JSON the call would have answered"}));
    };
    let key = live.secrets.deliver_key();
    match state
        .slow
        .deliveries
        .deliver(key, live.name(), token, answer)
    {
        Ok(()) => {
            tracing::info!(
                event = "answer_delivered",
                account = live.account.log_name()
            );
            HttpResponse::Ok().json(json!({"outcome": "delivered"}))
        }
        Err(refused) => {
            super::refusal::log_delivery_refused(live.account.log_name(), refused.as_str());
            let status = actix_web::http::StatusCode::from_u16(refused.status())
                .unwrap_or(actix_web::http::StatusCode::FORBIDDEN);
            HttpResponse::build(status).json(json!({"error": refused.to_string()}))
        }
    }
}
