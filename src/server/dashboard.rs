//! The dashboard on the admin port: the page (`/`, `/ui/app.js`, `/ui/edit.js`, `/ui/app.css`, embedded in
//! the binary) and the JSON it reads (`/api/overview`, `/api/rules`, `/api/try`,
//! `/api/pushes`), for scripts too. The page is a small script over that JSON rather than
//! server-rendered HTML: "try a message" and the recent pushes update in place, and the
//! JSON is what scripts want anyway. `/api/try` runs `explain::explain`, the code of
//! `wxrules explain`, from a conversation state when asked; `/api/rules` counts the users
//! in each state (never naming one).

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::accounts::Live;
use crate::rules::conversation::{self, UserState};
use crate::rules::Words;
use crate::wire::Message;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const EDIT_SCRIPT: &str = include_str!("ui/edit.js");
const STYLE: &str = include_str!("ui/app.css");

/// Nothing but the admin port itself: no CDN, no inline script, no framing by others.
const CSP: &str = "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The largest body `/api/try` takes (a pasted push is a few KiB).
pub(crate) const TRY_LIMIT: usize = 64 * 1024;

/// The dashboard's routes; the token check (`admin::authorize`) leaves the page's own files
/// open (they hold no data) and guards the JSON.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/ui/app.js", web::get().to(script))
        .route("/ui/edit.js", web::get().to(edit_script))
        .route("/ui/app.css", web::get().to(style))
        .route("/api/overview", web::get().to(overview))
        .route("/api/rules", web::get().to(rules))
        .route("/api/try", web::post().to(try_message))
        .route("/api/pushes", web::get().to(pushes))
        .route("/api/menu", web::get().to(menu));
}

/// Whether `path` is one of the page's own files, served without the token.
pub(crate) fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/ui/app.js" | "/ui/edit.js" | "/ui/app.css")
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn edit_script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", EDIT_SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn json_answer(status: actix_web::http::StatusCode, value: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .json(value)
}

fn ok(value: &Value) -> HttpResponse {
    json_answer(actix_web::http::StatusCode::OK, value)
}

fn bad_request(why: &str) -> HttpResponse {
    json_answer(
        actix_web::http::StatusCode::BAD_REQUEST,
        &json!({"error": why}),
    )
}

#[derive(Debug, Deserialize)]
struct AccountQuery {
    account: Option<String>,
    /// `/api/try`: answer from this draft's rules rather than the live ones.
    draft: Option<String>,
}

/// The account a request names (`?account=NAME`), or the single one; otherwise the answer
/// saying why not.
/// Whether the request may see `account`: an editor whose `accounts:` leave it out may
/// not (the page and the API then act as if it did not exist).
fn may_see(req: &actix_web::HttpRequest, account: &str) -> bool {
    use actix_web::HttpMessage;
    req.extensions()
        .get::<super::Signed>()
        .is_none_or(|super::Signed(editor)| editor.may_see(account))
}

fn account_of(
    state: &AppState,
    query: &AccountQuery,
    req: &actix_web::HttpRequest,
) -> Result<Arc<Live>, Box<HttpResponse>> {
    let found = match &query.account {
        Some(name) => state.accounts().by_name(name),
        None if !state.accounts().is_many() => state.account(),
        None => {
            return Err(Box::new(bad_request(
                "this server has several accounts: name one with ?account=NAME",
            )))
        }
    };
    found
        .filter(|live| may_see(req, live.name()))
        .ok_or_else(|| {
            Box::new(json_answer(
                actix_web::http::StatusCode::NOT_FOUND,
                &json!({"error": "no such account"}),
            ))
        })
}

/// `GET /api/overview`: every account's rules, digest and last reload.
async fn overview(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    let table = state.accounts().table();
    let accounts: Vec<Value> = table
        .accounts()
        .iter()
        .filter(|a| may_see(&req, a.name()))
        .map(|a| {
            let mut health = serde_json::to_value(a.health()).unwrap_or(Value::Null);
            if let Some(map) = health.as_object_mut() {
                map.insert("name".into(), a.name().into());
                map.insert("path".into(), a.account.path().into());
            }
            health
        })
        .collect();
    // Accounts of the config file that cannot be served: listed too, with their errors
    // (this JSON is behind the admin token when there is one), so that the page shows them.
    let mut accounts = accounts;
    for (name, unserved) in state
        .fleet
        .unserved()
        .into_iter()
        .filter(|(name, _)| may_see(&req, name))
    {
        accounts.push(json!({
            "name": name,
            "status": "unserved",
            "rules": 0,
            "last_reload": {
                "outcome": "rejected",
                "at": crate::clock::rfc3339_string(unserved.at),
                "error_count": unserved.errors.len(),
                "errors": unserved.errors.iter().take(crate::accounts::HEALTH_ERRORS).collect::<Vec<_>>(),
            },
        }));
    }
    let started_at = state.recent.as_ref().map_or(0, |r| r.started_at());
    ok(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": crate::clock::rfc3339_string(started_at),
        "accounts": accounts,
    }))
}

/// `GET /api/rules?account=NAME`: the account's live rules, in file order, with their hits
/// since the server started and their last hit.
async fn rules(
    state: web::Data<AppState>,
    query: web::Query<AccountQuery>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let unserved = query
        .account
        .as_ref()
        .and_then(|name| state.fleet.unserved().remove(name).map(|u| (name, u)));
    if let Some((name, unserved)) = unserved {
        // Nothing of it serves: no rules, and why.
        return ok(
            &json!({"account": name, "digest": "", "rules": [], "converses": false, "states": [], "unserved": true, "errors": unserved.errors}),
        );
    }
    let account = match account_of(&state, &query, &req) {
        Ok(account) => account,
        Err(answer) => return *answer,
    };
    let hits = account.metrics().rule_hits();
    let file = account.account.sources().rules.display().to_string();
    // The rules that are off (`enabled: false`) too, in their place in the file.
    let mut listed: Vec<&crate::rules::Rule> = account
        .rules
        .rules()
        .iter()
        .chain(account.rules.off())
        .collect();
    listed.sort_by_key(|r| r.line());
    let rules: Vec<Value> = listed
        .into_iter()
        .map(|r| {
            let last = r.last_hit();
            let words = |lang: Words, every: &str| {
                let when = r.when_words(lang);
                if when.is_empty() {
                    every.to_owned()
                } else {
                    when.join(lang.pick("; ", "；"))
                }
            };
            json!({
                "name": r.name(),
                "when": words(Words::En, "every message"),
                "when_zh": words(Words::Zh, "所有消息"),
                "reply": r.reply_kind(),
                "location": format!("{file}:{}", r.line()),
                "hits": hits.get(r.name()).copied().unwrap_or(0),
                "last_hit": last.map(crate::clock::rfc3339_string),
                "enabled": r.is_on(),
            })
        })
        .collect();
    let states = state_counts(&state, &account).await;
    ok(&json!({
        "account": account.name(),
        "digest": account.rules.digest(),
        "rules": rules,
        "converses": account.rules.converses(),
        "states": states,
    }))
}

/// How many users are in each state the account's rules set, in file order: counts only,
/// never an OpenID.
async fn state_counts(state: &AppState, account: &Live) -> Vec<Value> {
    if !account.rules.converses() {
        return Vec::new();
    }
    let names: Vec<&str> = account.rules.states().iter().map(|s| &**s).collect();
    let counts = state
        .conversations
        .counts(account.account.scope(), &names)
        .await;
    names
        .iter()
        .zip(counts)
        .map(|(name, users)| json!({"name": name, "users": users}))
        .collect()
}

/// What `/api/try` takes: a text, an event (with its key), or a whole push.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TryInput {
    text: Option<String>,
    event: Option<String>,
    event_key: Option<String>,
    xml: Option<String>,
    /// The user's conversation state to start from (`explain --state`).
    state: Option<TryState>,
}

/// `"state": {"name": "bind_phone", "vars": {"phone": "138…"}, "tries": 0}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TryState {
    name: String,
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    tries: u32,
}

/// The state a try starts from, as `explain --state` builds it: set by no rule, lasting
/// `DEFAULT_TTL` from `at`; its vars bounded as a rule's `set:` bounds them.
fn start_state(given: TryState, at: u64) -> Result<UserState, String> {
    let name = given.name.trim();
    if let Some(problem) = conversation::name_problem(name) {
        return Err(format!("state: {problem}"));
    }
    if given.vars.len() > conversation::MAX_VARS {
        return Err(format!(
            "state: a state holds at most {} vars",
            conversation::MAX_VARS
        ));
    }
    let mut vars = std::collections::BTreeMap::new();
    for (key, value) in given.vars {
        let key = key.trim();
        if key.is_empty() {
            return Err("state: a var's name is empty".into());
        }
        vars.insert(key.to_owned(), conversation::bounded_var(value));
    }
    Ok(UserState {
        name: name.to_owned(),
        vars,
        tries: given.tries,
        rule: String::new(),
        expires: at.saturating_add(conversation::DEFAULT_TTL.as_secs()),
    })
}

/// `POST /api/try?account=NAME`: what the account's rules do with a message, as `wxrules
/// explain --json` says it (with `state`: for a user in that state, and the state after).
/// No call is made, nothing is sent, and no user's state is read or written.
async fn try_message(
    state: web::Data<AppState>,
    admin: web::Data<super::Admin>,
    query: web::Query<AccountQuery>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    // JSON only: a form on another site cannot send it without a CORS preflight.
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return json_answer(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!({"error": "send the message as JSON (Content-Type: application/json)"}),
        );
    }
    let account = match account_of(&state, &query, &req) {
        Ok(account) => account,
        Err(answer) => return *answer,
    };
    if body.len() > TRY_LIMIT {
        return json_answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "a message to try is 64 KiB at most"}),
        );
    }
    let mut input: TryInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => return bad_request(&format!("the body is not the JSON expected: {e}")),
    };
    let now = state.clock.now();
    let message = match message_of(&account, &input, now) {
        Ok(message) => message,
        Err(why) => return bad_request(&why),
    };
    let start = match input.state.take().map(|given| start_state(given, now)) {
        Some(Ok(user)) => Some(user),
        Some(Err(why)) => return bad_request(&why),
        None => None,
    };
    let draft = match &query.draft {
        Some(id) => match admin.editing.draft(id) {
            Some(draft) if draft.account == account.name() => Some(draft),
            _ => return json_answer(StatusCode::NOT_FOUND, &json!({"error": "no such draft"})),
        },
        None => None,
    };
    let rules = match &draft {
        Some(draft) => match &draft.rules {
            Some(rules) => rules,
            None => return bad_request("the draft has errors: its rules do not load"),
        },
        None => &account.rules,
    };
    let explained = crate::explain::explain(
        rules,
        &message,
        now,
        now,
        &state.caller,
        None,
        start.as_ref(),
    );
    let mut value = explained.to_json(&account.account.sources().rules);
    value["account"] = account.name().into();
    ok(&value)
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

/// The message to try: pasted XML (decrypted with the account's key when it is a
/// safe-mode body), an event, or a text.
fn message_of(account: &Live, input: &TryInput, now: u64) -> Result<Message, String> {
    if let Some(xml) = nonempty(&input.xml) {
        return crate::explain::read_push(xml.as_bytes(), account.secrets.cipher())
            .map_err(|e| e.to_string());
    }
    let xml = if let Some(event) = nonempty(&input.event) {
        let mut kind = vec![("MsgType", "event"), ("Event", event)];
        kind.extend(nonempty(&input.event_key).map(|k| ("EventKey", k)));
        crate::explain::synthetic(&kind, now)
    } else if let Some(text) = input.text.as_deref().filter(|t| !t.is_empty()) {
        crate::explain::synthetic(
            &[("MsgType", "text"), ("Content", text), ("MsgId", "1")],
            now,
        )
    } else {
        return Err("give a text, an event or a push's XML".into());
    };
    Message::parse(xml.as_bytes()).map_err(|e| format!("the message does not parse: {e}"))
}

/// `GET /api/pushes[?account=NAME]`: the last pushes, newest first, OpenIDs masked.
async fn pushes(
    state: web::Data<AppState>,
    query: web::Query<AccountQuery>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    if let Some(name) = &query.account {
        if state.accounts().by_name(name).is_none() || !may_see(&req, name) {
            return json_answer(
                actix_web::http::StatusCode::NOT_FOUND,
                &json!({"error": "no such account"}),
            );
        }
    }
    let Some(recent) = &state.recent else {
        return ok(&json!({"capacity": 0, "pushes": []}));
    };
    let wanted = query.account.as_deref();
    let pushes = recent.pushes_of(|a| wanted.is_none_or(|w| a == w) && may_see(&req, a));
    ok(&json!({"capacity": crate::telemetry::recent::CAPACITY, "pushes": pushes}))
}

/// `GET /api/menu?account=NAME`: the account's menu file as a phone shows it, each button
/// with the rule a tap on it reaches and that rule's hits; `"menu": null` when the account
/// has none, `errors` when the file is bad. The file is read (1 MiB at most) on a blocking
/// thread, when the page asks.
async fn menu(
    state: web::Data<AppState>,
    query: web::Query<AccountQuery>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let account = match account_of(&state, &query, &req) {
        Ok(account) => account,
        Err(answer) => return *answer,
    };
    let Some(path) = account.account.spec().menu.clone() else {
        return ok(&json!({"account": account.name(), "menu": null}));
    };
    let file = path.display().to_string();
    let loaded = match web::block(move || path.is_file().then(|| crate::menu::load(&path))).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return ok(&json!({"account": account.name(), "menu": null, "file": file})),
        Err(_) => return bad_request("the menu could not be read"),
    };
    let menu = match loaded {
        Ok(loaded) => loaded.menu,
        Err(errors) => {
            let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            return ok(
                &json!({"account": account.name(), "menu": null, "file": file, "errors": errors}),
            );
        }
    };
    let hits = account.metrics().rule_hits();
    let button = |b: &crate::menu::Button| -> Value {
        let rule = match (b.kind, &b.key) {
            (Some(kind), Some(key)) if kind.pushes_key() => {
                crate::menu::rule_for(&account.rules, kind, key)
            }
            _ => None,
        };
        json!({
            "name": b.name,
            "type": b.kind.map(crate::menu::Kind::as_str),
            "key": b.key,
            "url": b.url,
            "rule": rule.map(crate::rules::Rule::name),
            "needs_rule": b.kind.is_some_and(crate::menu::Kind::wants_rule),
            "hits": rule.map(|r| hits.get(r.name()).copied().unwrap_or(0)),
        })
    };
    let bar = |buttons: &[crate::menu::Button]| -> Vec<Value> {
        buttons
            .iter()
            .map(|b| {
                let mut top = button(b);
                top["sub_button"] = b.sub_button.iter().map(button).collect();
                top
            })
            .collect()
    };
    let mut menus = vec![json!({"matchrule": null, "button": bar(&menu.button)})];
    menus.extend(
        menu.conditional
            .iter()
            .map(|c| json!({"matchrule": c.matchrule, "button": bar(&c.button)})),
    );
    ok(&json!({"account": account.name(), "file": file, "menu": menus}))
}
