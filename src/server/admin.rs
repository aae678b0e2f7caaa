//! The admin port (`--admin-listen`): `/healthz`, `/metrics`, `POST /-/reload` and the
//! dashboard (`server::dashboard`), off the public port that WeChat reaches. Everything but
//! `/healthz` (for probes) and the dashboard page's own files is behind a Bearer token when
//! the server has one (`WXRULES_ADMIN_TOKEN`, or the editors' of the config file), which it
//! must on an address other than loopback.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use tokio::sync::{mpsc, oneshot};

use super::signin::Attempts;
use super::{body, dashboard, health, AppState};
use crate::accounts::editors::{Editor, Role};
use crate::accounts::ReloadOutcome;
use crate::reload::{Control, RELOAD_TIMEOUT};

/// What the admin routes need besides the server's state.
#[derive(Clone)]
pub struct Admin {
    /// The reload loop's channel, shared with SIGHUP.
    pub controls: mpsc::Sender<Control>,
    /// Host names the admin port answers to besides loopback ones (`--admin-host`): with a
    /// token, also any IP address.
    pub hosts: Arc<[String]>,
    /// Failed token attempts per client address.
    pub attempts: Arc<Attempts>,
    /// The drafts being worked on in the page, and one apply at a time per account.
    pub editing: Arc<crate::editor::Editing>,
}

/// Put in a request's extensions when it carried an editor's token (`WXRULES_ADMIN_TOKEN`
/// is the editor `admin`): who it is, for the routes to check its role and accounts, and
/// for `/healthz` to show errors as well as counts.
#[derive(Debug, Clone)]
pub(crate) struct Signed(pub(crate) Arc<Editor>);

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// Registers the admin routes on an App, under the token check and the body bounds.
pub fn configure_admin(cfg: &mut web::ServiceConfig, state: AppState, admin: Admin) {
    cfg.app_data(web::Data::new(state))
        .app_data(web::Data::new(admin))
        .service(
            web::scope("")
                .wrap(actix_web::middleware::from_fn(body::bound_bodies))
                .wrap(actix_web::middleware::from_fn(authorize))
                .app_data(web::PayloadConfig::new(super::editor::DRAFT_LIMIT))
                .app_data(body::Limit(super::editor::DRAFT_LIMIT))
                .route("/healthz", web::get().to(health::healthz))
                .route("/metrics", web::get().to(health::metrics))
                .route("/-/reload", web::post().to(reload))
                .configure(dashboard::configure)
                .configure(super::editor::configure),
        );
}

/// Refuses a request without an editor's token (401) when the server has editors (or
/// `WXRULES_ADMIN_TOKEN`), and marks one that has it as `Signed`. The routes decide what
/// the editor's role and accounts allow.
async fn authorize(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl actix_web::body::MessageBody, BoxBody>>, actix_web::Error>
{
    // `/healthz` stays open: probes (Kubernetes' kubelet, load balancers) send no token,
    // and it tells nothing a token would guard. The dashboard's page holds no data (its
    // JSON is guarded): it loads, then asks for the token.
    let open = req.path() == "/healthz" || dashboard::is_page(req.path());
    let (Some(admin), Some(state)) = (
        req.app_data::<web::Data<Admin>>().cloned(),
        req.app_data::<web::Data<AppState>>().cloned(),
    ) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let editors = state.fleet.editors();
    if let Some(why) = foreign(&req, &admin, editors.is_empty()) {
        let response = HttpResponse::Forbidden().json(serde_json::json!({ "error": why }));
        return Ok(req.into_response(response).map_into_right_body());
    }
    if editors.is_empty() {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let client = req.peer_addr().map(|a| a.ip());
    if let Some(left) = client.and_then(|ip| admin.attempts.refused(ip)) {
        let response = HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", left.as_secs().max(1).to_string()))
            .json(serde_json::json!({"error": "too many requests with a wrong token: try again later"}));
        return Ok(req.into_response(response).map_into_right_body());
    }
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given.map(|token| editors.who(token)) {
        Some(Some(editor)) => {
            if let Some(ip) = client {
                admin.attempts.succeeded(ip);
            }
            req.extensions_mut().insert(Signed(editor));
        }
        // An open route without a token: served, without what a token shows.
        None if open => {}
        wrong => {
            // A wrong token counts against the address; none at all (a page not signed in
            // yet) does not.
            if let (Some(ip), Some(None)) = (client, &wrong) {
                admin.attempts.failed(ip, req.path());
            }
            if !open {
                let response = HttpResponse::Unauthorized()
                    .insert_header(("WWW-Authenticate", "Bearer"))
                    .json(serde_json::json!({"error": "this admin endpoint needs `Authorization: Bearer` with WXRULES_ADMIN_TOKEN or an editor's token"}));
                return Ok(req.into_response(response).map_into_right_body());
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Why a request that a web page elsewhere made the browser send is refused, if it is one.
/// A page on another site can make a browser post a form to `127.0.0.1:9180` (a reload) and,
/// by pointing its own name at 127.0.0.1 (DNS rebinding), read what the port answers. So the
/// `Host` must be a loopback name, a name given with `--admin-host`, or (with a token: the
/// port may then be reached by address, as Kubernetes' probes do) an IP address, which no
/// rebinding page can have for its own; with or without a token, since `/healthz` and the
/// page answer without one. And without a token, a request other than `GET` that carries
/// another origin (`Origin`, or `Sec-Fetch-Site: cross-site`/`same-site`) is refused. curl,
/// scripts and `wxrules reload` send neither header and a loopback `Host`, and pass.
fn foreign(req: &ServiceRequest, admin: &Admin, tokenless: bool) -> Option<&'static str> {
    use actix_web::http::header::{HeaderName, HOST, ORIGIN};
    let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header(&HOST);
    if let Some(host) = host {
        let named = admin
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host_name(host)));
        let address = !tokenless && host_name(host).parse::<std::net::IpAddr>().is_ok();
        if !(loopback_host(host) || named || address) {
            return Some("the admin port answers only to a loopback Host (localhost, 127.0.0.1, [::1]), a name given with --admin-host, or with a token an IP address");
        }
    }
    // With a token, a page elsewhere cannot send it (the header needs a CORS preflight,
    // which is refused): only the tokenless port checks where a POST comes from.
    if !tokenless || req.method() == actix_web::http::Method::GET {
        return None;
    }
    let site = header(&HeaderName::from_static("sec-fetch-site"));
    if matches!(site, Some("cross-site" | "same-site")) {
        return Some("a request from another site's page");
    }
    let origin = header(&ORIGIN).map(|o| o.split_once("://").map_or(o, |(_, rest)| rest));
    match (origin, host) {
        (Some(origin), Some(host)) if !origin.eq_ignore_ascii_case(host) => {
            Some("a request from another origin's page")
        }
        _ => None,
    }
}

/// A `Host` without its port, and an IPv6 address without its brackets.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
}

/// `localhost` (or `localhost.`), `127.0.0.1`, `[::1]`, `[::ffff:127.0.0.1]` (any loopback
/// address), with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = host_name(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// `POST /-/reload`: the same reload as SIGHUP; answers its report when it is done: 200
/// applied, 422 rejected (errors as `file:line:col: …`), 503 when it could not be had. With
/// several accounts, the report is per account; 422 when any account or the config file
/// was refused. A fleet of one answers its account's report, as in Part 1.
async fn reload(
    admin: web::Data<Admin>,
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let signed = req.extensions().get::<Signed>().cloned();
    if let Some(Signed(editor)) = &signed {
        if editor.role != Role::Editor {
            return HttpResponse::Forbidden()
                .json(serde_json::json!({"error": "a viewer cannot reload"}));
        }
    }
    let by = signed
        .as_ref()
        .map_or("admin", |Signed(editor)| &*editor.name);
    tracing::info!(event = "reload_requested", by);
    let (reply, report) = oneshot::channel();
    let report = match ask(&admin, Control::Reload(Some(reply)), report).await {
        Ok(report) => report,
        Err(unavailable) => return *unavailable,
    };
    if state.accounts().is_many() {
        return match report.outcome {
            ReloadOutcome::Applied | ReloadOutcome::Unchanged => HttpResponse::Ok().json(report),
            ReloadOutcome::Rejected | ReloadOutcome::Partial => {
                HttpResponse::UnprocessableEntity().json(report)
            }
            _ => HttpResponse::ServiceUnavailable().json(report),
        };
    }
    let Some(live) = state.account() else {
        return HttpResponse::ServiceUnavailable().json(report);
    };
    let report = report.single(&live);
    match report.outcome {
        ReloadOutcome::Applied => HttpResponse::Ok().json(report),
        ReloadOutcome::Rejected => HttpResponse::UnprocessableEntity().json(report),
        _ => HttpResponse::ServiceUnavailable().json(report),
    }
}

/// Sends `control` to the reload loop and waits for its `answer`: within the loop's own
/// timeout and a little more for the queue ahead; 503 when it cannot be had.
async fn ask<T>(
    admin: &Admin,
    control: Control,
    answer: oneshot::Receiver<T>,
) -> Result<T, Box<HttpResponse>> {
    let unavailable = |why: &str| {
        Box::new(
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"outcome": "failed", "errors": [why]})),
        )
    };
    if admin
        .controls
        .send_timeout(control, Duration::from_secs(5))
        .await
        .is_err()
    {
        return Err(unavailable(
            "the reload loop is not running (the server is stopping?)",
        ));
    }
    match tokio::time::timeout(RELOAD_TIMEOUT + Duration::from_secs(5), answer).await {
        Ok(Ok(report)) => Ok(report),
        _ => Err(unavailable("no answer from the reload loop")),
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_names_and_addresses_with_or_without_a_port() {
        for host in [
            "localhost",
            "LOCALHOST:9180",
            "localhost.:9180",
            "127.0.0.1:9180",
            "127.1.2.3",
            "[::1]:9180",
            "[::ffff:127.0.0.1]:9180",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:9180",
            "localhost.evil.example",
            "10.0.0.5:9180",
            "[::2]:9180",
            "",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
