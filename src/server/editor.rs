//! Changing replies over the admin port (the page uses these; scripts may too): who is
//! signed in (`/api/me`), drafts (`POST /api/drafts`), applying one, the history and
//! rollback. Every write needs an editor's token whose role is `editor` and whose accounts
//! include the one named; a viewer's or anonymous write is refused (403; 401 without a
//! token when the server has editors). JSON only, which a form on another site cannot send.
//! The work is `crate::editor`'s, on a blocking thread; after an apply the account is
//! reloaded through the reload loop and the answer says how that went.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Admin, AppState, Signed};
use crate::accounts::editors::Editor;
use crate::accounts::Live;
use crate::edit::Change;
use crate::editor::{self, ApplyError, Draft, History, Target};
use crate::reload::Control;

/// The largest draft request: a rules file's edits and a few templates.
pub(crate) const DRAFT_LIMIT: usize = 512 * 1024;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/me", web::get().to(me))
        .route("/api/source", web::get().to(source))
        .route("/api/history/{id}", web::get().to(history_entry))
        .route("/api/drafts", web::post().to(create_draft))
        .route("/api/drafts/{id}", web::get().to(show_draft))
        .route("/api/drafts/{id}/apply", web::post().to(apply_draft))
        .route("/api/history", web::get().to(history))
        .route("/api/history/{id}/rollback", web::post().to(rollback));
}

fn answer(status: StatusCode, value: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(value)
}

fn error(status: StatusCode, why: &str) -> HttpResponse {
    answer(status, &json!({ "error": why }))
}

#[derive(Debug, Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

/// `GET /api/me`: who is signed in, and what they may do.
async fn me(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let names: Vec<String> = state
        .accounts()
        .table()
        .accounts()
        .iter()
        .map(|a| a.name().to_owned())
        .collect();
    match req.extensions().get::<Signed>() {
        Some(Signed(editor)) => answer(
            StatusCode::OK,
            &json!({
                "signed_in": true,
                "name": &*editor.name,
                "role": editor.role,
                "may_edit": names.iter().filter(|n| editor.may_edit(n)).collect::<Vec<_>>(),
                "may_see": names.iter().filter(|n| editor.may_see(n)).collect::<Vec<_>>(),
            }),
        ),
        None => answer(
            StatusCode::OK,
            &json!({
                "signed_in": false,
                // Without editors the page is read-only: nobody can sign in to change it.
                "editors": !state.fleet.editors().is_empty(),
                "may_edit": [],
                "may_see": names,
            }),
        ),
    }
}

/// What a job on a blocking thread gave: its value, or the answer for its error (`failed`,
/// with the error's text) or for a job that could not run (503: `what`).
fn finished<T, E: std::fmt::Display>(
    job: Result<Result<T, E>, actix_web::error::BlockingError>,
    failed: StatusCode,
    what: &str,
) -> Result<T, Box<HttpResponse>> {
    match job {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Box::new(error(failed, &e.to_string()))),
        Err(_) => Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, what))),
    }
}

/// The account `query` names that the request may see: 404 for one it may not (as for
/// one that does not exist).
fn visible(
    state: &AppState,
    req: &HttpRequest,
    account: Option<&str>,
) -> Result<Arc<Live>, Box<HttpResponse>> {
    let live = match account {
        Some(name) => state.accounts().by_name(name),
        None => state.account().filter(|_| !state.accounts().is_many()),
    };
    let hidden = || Box::new(error(StatusCode::NOT_FOUND, "no such account"));
    let live = live.ok_or_else(hidden)?;
    if let Some(Signed(editor)) = req.extensions().get::<Signed>() {
        if !editor.may_see(live.name()) {
            return Err(hidden());
        }
    }
    Ok(live)
}

/// `GET /api/source?account=A`: what the editor starts from — the rules as the file writes
/// them (each rule as JSON), the templates' texts, the fields each rule's messages carry
/// (offered while a template is typed), and the files' digest, the `base` of a draft.
async fn source(
    state: web::Data<AppState>,
    query: web::Query<AccountQuery>,
    req: HttpRequest,
) -> HttpResponse {
    let live = match visible(&state, &req, query.account.as_deref()) {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    let sources = live.account.sources().clone();
    let read = web::block(move || crate::rules::read_sources(&sources)).await;
    let read =
        read.map(|r| r.map_err(|e| e.0.first().map(ToString::to_string).unwrap_or_default()));
    let files = match finished(
        read,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the files could not be read",
    ) {
        Ok(files) => files,
        Err(refused) => return *refused,
    };
    let rules = rules_as_json(&files.rules);
    let fields: serde_json::Map<String, Value> = live
        .rules
        .rules()
        .iter()
        .map(|r| (r.name().to_owned(), json!(r.fields())))
        .collect();
    let templates: Vec<Value> = files
        .templates
        .iter()
        .map(|(name, text)| json!({"name": name, "text": text}))
        .collect();
    answer(
        StatusCode::OK,
        &json!({"account": live.name(), "digest": files.digest, "rules": rules,
                "templates": templates, "fields": fields}),
    )
}

/// Each rule of a rules file's text as JSON, in the file's order: `[{name, rule}]`. A rule
/// JSON cannot hold (a key that is not a string) is left out: the editor cannot show it.
fn rules_as_json(text: &str) -> Vec<Value> {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return Vec::new();
    };
    let Some(list) = doc.get("rules").and_then(serde_yaml::Value::as_sequence) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|rule| {
            let name = rule.get("name")?.as_str()?.to_owned();
            let rule = serde_json::to_value(rule).ok()?;
            Some(json!({"name": name, "rule": rule}))
        })
        .collect()
}

/// The signed-in editor who may change `account`, or the refusal.
fn writer(
    state: &AppState,
    req: &HttpRequest,
    account: Option<&str>,
) -> Result<(Arc<Editor>, Arc<Live>), Box<HttpResponse>> {
    let Some(Signed(editor)) = req.extensions().get::<Signed>().cloned() else {
        return Err(Box::new(if state.fleet.editors().is_empty() {
            error(
                StatusCode::FORBIDDEN,
                "changes need an editor: set WXRULES_ADMIN_TOKEN, or name editors in the config file",
            )
        } else {
            error(StatusCode::UNAUTHORIZED, "sign in with an editor's token")
        }));
    };
    let live = match account {
        Some(name) => state.accounts().by_name(name),
        None if !state.accounts().is_many() => state.account(),
        None => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "this server has several accounts: name one with ?account=NAME",
            )))
        }
    };
    let Some(live) = live else {
        return Err(Box::new(error(StatusCode::NOT_FOUND, "no such account")));
    };
    if !editor.may_edit(live.name()) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "this editor may not change this account's replies (a viewer, or not one of its accounts)",
        )));
    }
    Ok((editor, live))
}

/// What a draft is made for: the account's files and its rule tests.
fn target_of(live: &Live) -> Target {
    let spec = live.account.spec();
    Target {
        account: live.name().to_owned(),
        sources: live.account.sources().clone(),
        tests: spec.tests.clone(),
    }
}

/// Whether the body is JSON (a form on another site cannot send it without a preflight).
fn json_body(req: &HttpRequest) -> Option<HttpResponse> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    (!json).then(|| {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON (Content-Type: application/json)",
        )
    })
}

/// A write's request checked: a JSON body, from an editor who may change the account, that
/// reads as `T`.
fn write_request<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    account: Option<&str>,
    body: &[u8],
) -> Result<(Arc<Editor>, Arc<Live>, T), Box<HttpResponse>> {
    if let Some(refused) = json_body(req) {
        return Err(Box::new(refused));
    }
    let (editor, live) = writer(state, req, account)?;
    let input = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not the JSON expected: {e}"),
        ))
    })?;
    Ok((editor, live, input))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftInput {
    /// The digest the editor's view began from (`/api/rules`' `digest`).
    base: String,
    changes: Vec<Change>,
}

/// A draft as the API shows it.
fn draft_json(draft: &Draft) -> Value {
    json!({
        "draft": draft.id,
        "account": draft.account,
        "base": draft.base,
        "diff": draft.diff,
        "rules": draft.rules_changed,
        "errors": draft.errors,
        "tests": draft.tests,
        "good": draft.is_good(),
    })
}

/// `POST /api/drafts?account=A` with `{"base", "changes"}`: the draft, its diff, its
/// errors and its tests. A change the file cannot take (no such rule, …) is 422.
async fn create_draft(
    state: web::Data<AppState>,
    admin: web::Data<Admin>,
    query: web::Query<AccountQuery>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let (editor, live, input) =
        match write_request::<DraftInput>(&state, &req, query.account.as_deref(), &body) {
            Ok(found) => found,
            Err(refused) => return *refused,
        };
    let target = target_of(&live);
    let made = web::block(move || {
        editor::draft::make(
            &target,
            editor.name.clone(),
            input.base,
            input.changes,
            Some(&live.rules),
        )
    })
    .await;
    match finished(
        made,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the draft could not be made",
    ) {
        Ok(draft) => answer(StatusCode::OK, &draft_json(&admin.editing.keep(draft))),
        Err(refused) => *refused,
    }
}

/// `GET /api/drafts/ID`: a draft kept, as it was made.
async fn show_draft(
    admin: web::Data<Admin>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(draft) = admin.editing.draft(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such draft (drafts are kept an hour)",
        );
    };
    let signed = req.extensions().get::<Signed>().cloned();
    if signed.is_none_or(|Signed(editor)| !editor.may_see(&draft.account)) {
        return error(
            StatusCode::NOT_FOUND,
            "no such draft (drafts are kept an hour)",
        );
    }
    answer(StatusCode::OK, &draft_json(&draft))
}

/// `POST /api/drafts/ID/apply`: written and reloaded (200 `applied`), or 409 with the other
/// change, or 422 with the errors and failing cases.
async fn apply_draft(
    state: web::Data<AppState>,
    admin: web::Data<Admin>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = json_body(&req) {
        return refused;
    }
    let Some(draft) = admin.editing.draft(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such draft (drafts are kept an hour)",
        );
    };
    let (editor, live) = match writer(&state, &req, Some(&draft.account)) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    if *editor.name != *draft.editor {
        return error(StatusCode::FORBIDDEN, "this draft is another editor's");
    }
    apply(&admin, &live, draft).await
}

/// Applies `draft` on a blocking thread, then reloads its account; the answer.
async fn apply(admin: &Admin, live: &Live, draft: Arc<Draft>) -> HttpResponse {
    let target = target_of(live);
    let editing = Arc::clone(&admin.editing);
    let history = History::of(&target.sources.rules);
    let applying = Arc::clone(&draft);
    let done = web::block(move || editing.apply(&target, &applying, &history)).await;
    let metrics = live.metrics();
    let applied = match done {
        Ok(Ok(applied)) => applied,
        Ok(Err(ApplyError::Conflict { base, now, diff })) => {
            metrics.observe_edit("conflict");
            return answer(
                StatusCode::CONFLICT,
                &json!({"outcome": "conflict", "base": base, "digest": now, "diff": diff,
                        "error": "the files changed since this draft began: start again from them"}),
            );
        }
        Ok(Err(ApplyError::Rejected)) => {
            metrics.observe_edit("rejected");
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"outcome": "rejected", "errors": draft.errors, "tests": draft.tests}),
            );
        }
        Ok(Err(e)) => {
            metrics.observe_edit("failed");
            tracing::error!(event = "rules_edit_failed", account = %draft.account, editor = %draft.editor, error = %e);
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the change could not be applied",
            )
        }
    };
    metrics.observe_edit(if draft.rollback_of.is_some() {
        "rollback"
    } else {
        "applied"
    });
    let history = match &applied.history {
        Ok(id) => Value::from(id.as_str()),
        Err(e) => {
            tracing::error!(event = "history_not_recorded", account = %draft.account, error = %e);
            Value::Null
        }
    };
    tracing::info!(
        event = "rules_edited",
        account = %draft.account,
        editor = %draft.editor,
        rules = ?draft.rules_changed,
        digest_before = %applied.digest_before,
        digest_after = %applied.digest,
        history = history.as_str().unwrap_or(""),
        rollback_of = draft.rollback_of.as_deref().unwrap_or(""),
    );
    let reload = reload(admin).await;
    let line = reload
        .as_ref()
        .and_then(|r| r.accounts.iter().find(|a| a.account == draft.account))
        .map(|a| json!(a.report));
    answer(
        StatusCode::OK,
        &json!({"outcome": "applied", "digest": applied.digest, "history": history,
                "reload": line}),
    )
}

/// Asks the reload loop for a reload, and waits for its report (the account's files
/// changed: it is loaded again).
async fn reload(admin: &Admin) -> Option<crate::reload::FleetReport> {
    let (reply, report) = tokio::sync::oneshot::channel();
    admin
        .controls
        .send_timeout(
            Control::Reload(Some(reply)),
            std::time::Duration::from_secs(5),
        )
        .await
        .ok()?;
    tokio::time::timeout(crate::reload::RELOAD_TIMEOUT, report)
        .await
        .ok()?
        .ok()
}

/// `GET /api/history?account=A`: the changes made in the page, newest first.
async fn history(
    state: web::Data<AppState>,
    query: web::Query<AccountQuery>,
    req: HttpRequest,
) -> HttpResponse {
    let live = match visible(&state, &req, query.account.as_deref()) {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    let account = live.name().to_owned();
    let rules = live.account.sources().rules.clone();
    let listed = web::block(move || History::of(&rules).list(&account)).await;
    match finished(
        listed,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the history could not be read",
    ) {
        Ok(changes) => answer(StatusCode::OK, &json!({ "changes": changes })),
        Err(refused) => *refused,
    }
}

/// `GET /api/history/ID?account=A`: one change, with its diff.
async fn history_entry(
    state: web::Data<AppState>,
    query: web::Query<AccountQuery>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let live = match visible(&state, &req, query.account.as_deref()) {
        Ok(live) => live,
        Err(refused) => return *refused,
    };
    let account = live.name().to_owned();
    let rules = live.account.sources().rules.clone();
    let id = id.into_inner();
    let read = web::block(move || History::of(&rules).before(&account, &id)).await;
    match finished(read, StatusCode::NOT_FOUND, "the history could not be read") {
        Ok((entry, files)) => {
            let diff: String = files
                .iter()
                .map(|f| {
                    crate::edit::diff(
                        f.before.as_deref().unwrap_or(""),
                        f.after.as_deref().unwrap_or(""),
                        &f.path,
                    )
                })
                .collect();
            answer(StatusCode::OK, &json!({"change": entry, "diff": diff}))
        }
        Err(refused) => *refused,
    }
}

#[derive(Debug, Deserialize)]
struct RollbackInput {
    /// The digest the editor's view began from.
    base: String,
}

/// `POST /api/history/ID/rollback?account=A` with `{"base"}`: the files as they were before
/// change ID, written as a change of its own (checked and tested like any); answered as an
/// apply.
async fn rollback(
    state: web::Data<AppState>,
    admin: web::Data<Admin>,
    query: web::Query<AccountQuery>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let (editor, live, input) =
        match write_request::<RollbackInput>(&state, &req, query.account.as_deref(), &body) {
            Ok(found) => found,
            Err(refused) => return *refused,
        };
    let target = target_of(&live);
    let id = id.into_inner();
    let working = Arc::clone(&live);
    let made = web::block(move || {
        let history = History::of(&target.sources.rules);
        let (_, files) = history
            .before(&target.account, &id)
            .map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))?;
        editor::draft::of_files(
            &target,
            editor.name.clone(),
            input.base,
            files,
            Some(&working.rules),
            id,
        )
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
    })
    .await;
    let draft = match made {
        Ok(Ok(draft)) => admin.editing.keep(draft),
        Ok(Err((status, why))) => return error(status, &why),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the rollback could not be made",
            )
        }
    };
    apply(&admin, &live, draft).await
}
