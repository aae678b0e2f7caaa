//! `GET /healthz` and `GET /metrics`: on the public port, or on the admin port with
//! `--admin-listen`.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::{AppState, Signed};
use crate::reload::Shown;

/// `GET /metrics`: Prometheus text format. With several accounts, each series carries
/// `account="NAME"`, except the process's own (the dedup store, the log).
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (answers, bytes) = state.dedup.stored();
    state.metrics.set_dedup_stored(answers, bytes);
    state
        .metrics
        .set_states_evicted(state.conversations.evicted());
    let text = if state.accounts().is_many() {
        let table = state.accounts().table();
        crate::telemetry::metrics::Metrics::render_accounts(
            &state.metrics,
            table.accounts().iter().map(|a| a.metrics()),
        )
    } else {
        state.metrics.render()
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// `GET /healthz`: which rules are live and how the last reload went; with several
/// accounts, that of each (`accounts.NAME`), and `status` `ok` only when every account's
/// last reload applied.
///
/// Errors are counted, not quoted, unless the request carried the admin token: an error
/// quotes what it is about, and `/healthz` answers probes without one.
pub(crate) async fn healthz(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let shown = match req.extensions().get::<Signed>() {
        Some(_) => Shown::Errors,
        None => Shown::Counts,
    };
    HttpResponse::Ok().json(state.fleet.health(shown))
}
