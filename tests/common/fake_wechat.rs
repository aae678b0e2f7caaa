//! A fake of WeChat's API on 127.0.0.1, for the tests: `POST /cgi-bin/stable_token` and
//! `POST /cgi-bin/message/custom/send`, answering with WeChat's documented JSON and errcodes
//! (40125 for a wrong secret, 40001/42001 for a token that is no good, `{"errcode":0,
//! "errmsg":"ok"}` for a delivered message). A test can script the next answers of
//! `custom/send`, fail every send to one user, give a user a customer-service quota past
//! which WeChat answers 45047 (`{"errcode":45047,"errmsg":"out of response count
//! limit"}`), expire the token, make `stable_token` misbehave (a redirect, an endless
//! answer), and read what was delivered, in order.
//! The custom menu (`menu/get`, `menu/create`, `menu/addconditional`, `menu/delete`) is
//! kept as WeChat keeps it, with its documented limits and errcodes, and every menu call
//! recorded; `material/add_material` takes WeChat's multipart form and keeps the files, and
//! a message naming material deleted since (`delete_material`) gets 40007.
//! Downloads as WeChat documents them: `GET media/get` gives a temporary media's bytes
//! (`add_media`) with its `Content-Type` and `Content-Disposition: attachment;
//! filename="MEDIA_ID.ext"`, for a video `{"video_url": …}`, and 40007 for an id it does
//! not have; `POST material/get_material` gives permanent material's bytes (as
//! `application/octet-stream`), for a video `{"title", "description", "down_url"}`, and
//! 40007 likewise; the video links are served at `/video/MEDIA_ID`.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::collections::HashMap;

pub const APPID: &str = "wx_fake_appid";
pub const SECRET: &str = "fake-app-secret-0123456789";

/// How `stable_token` misbehaves, instead of answering.
#[derive(Debug, Clone)]
pub enum Misbehave {
    /// `307 Temporary Redirect` to this URL: a client that follows it posts the AppSecret
    /// there.
    RedirectTo(String),
    /// A 200 answer of this many bytes (`{"access_token":"` and then `a`s), streamed
    /// without a Content-Length; the bytes the client took are counted.
    Endless(usize),
}

/// The next answer of `custom/send`, instead of delivering.
#[derive(Debug, Clone, Copy)]
pub enum Scripted {
    /// `{"errcode": N, "errmsg": …}` with HTTP 200.
    Errcode(i64),
    /// An HTTP status with an empty body.
    Status(u16),
}

#[derive(Debug, Default)]
pub struct FakeState {
    token_calls: AtomicUsize,
    send_calls: AtomicUsize,
    issued: AtomicUsize,
    /// The token that works now, if any.
    valid: Mutex<Option<String>>,
    script: Mutex<VecDeque<Scripted>>,
    /// Delivered messages, in the order they came.
    delivered: Mutex<Vec<Value>>,
    /// Users every send to whom fails, with this errcode.
    failing: Mutex<HashMap<String, i64>>,
    /// Users with a customer-service quota: the messages WeChat still takes for them in
    /// their window; at 0 it answers 45047.
    allowance: Mutex<HashMap<String, usize>>,
    /// `custom/send` calls per user that got past the token check, delivered or not.
    attempts: Mutex<HashMap<String, usize>>,
    misbehave: Mutex<Option<Misbehave>>,
    /// Bytes of an endless answer handed to the connection so far.
    streamed: Arc<AtomicUsize>,
    /// The default menu (`menu/create`'s body), if any.
    menu: Mutex<Option<Value>>,
    /// The conditional menus, each with its `menuid`.
    conditional: Mutex<Vec<Value>>,
    /// Each menu call (`menu/get`, `menu/create`, …), in order.
    menu_calls: Mutex<Vec<String>>,
    /// Uploaded permanent material, in order.
    materials: Mutex<Vec<Uploaded>>,
    /// Media ids deleted (in the MP console): a message naming one gets 40007.
    deleted: Mutex<Vec<String>>,
    /// Temporary media by id (what `media/upload` makes): its content type and bytes.
    temporary: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Each download call (`media/get ID`, `get_material ID`, `video ID`), in order.
    downloads: Mutex<Vec<String>>,
}

/// One file uploaded with `material/add_material`.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub kind: String,
    pub filename: String,
    pub bytes: Vec<u8>,
    /// A video's `description` form field.
    pub description: Option<Value>,
    pub media_id: String,
}

pub struct FakeWechat {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeWechat {
    /// Starts the fake on a free loopback port.
    pub fn start() -> FakeWechat {
        FakeWechat::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Starts the fake on `listener` (a test that has the API "down" first binds its
    /// port later).
    pub fn start_on(listener: TcpListener) -> FakeWechat {
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let state = Arc::new(FakeState::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::from(Arc::clone(&shared)))
                        .route("/cgi-bin/stable_token", web::post().to(stable_token))
                        .route("/cgi-bin/message/custom/send", web::post().to(custom_send))
                        .route(
                            "/cgi-bin/get_current_autoreply_info",
                            web::get().to(autoreply_info),
                        )
                        .route("/cgi-bin/menu/get", web::get().to(menu_get))
                        .route("/cgi-bin/menu/create", web::post().to(menu_create))
                        .route(
                            "/cgi-bin/menu/addconditional",
                            web::post().to(menu_addconditional),
                        )
                        .route("/cgi-bin/menu/delete", web::get().to(menu_delete))
                        .app_data(web::PayloadConfig::new(32 * 1024 * 1024))
                        .route(
                            "/cgi-bin/material/add_material",
                            web::post().to(add_material),
                        )
                        .route("/cgi-bin/media/get", web::get().to(media_get))
                        .route(
                            "/cgi-bin/material/get_material",
                            web::post().to(get_material),
                        )
                        .route("/video/{media_id}", web::get().to(video_download))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
                tx.send(server.handle()).unwrap();
                server.await
            })
        });
        let handle = rx.recv().unwrap();
        FakeWechat {
            addr,
            state,
            handle,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many times `stable_token` was called.
    pub fn token_calls(&self) -> usize {
        self.state.token_calls.load(Ordering::SeqCst)
    }

    /// How many times `custom/send` was called, delivered or not.
    pub fn send_calls(&self) -> usize {
        self.state.send_calls.load(Ordering::SeqCst)
    }

    /// The next answers of `custom/send`, in order.
    pub fn script(&self, answers: &[Scripted]) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Every send to `user` fails with `errcode` from now on (`-1`: system busy, retried).
    pub fn fail_user(&self, user: &str, errcode: i64) {
        self.state
            .failing
            .lock()
            .unwrap()
            .insert(user.to_owned(), errcode);
    }

    /// WeChat takes `n` more customer-service messages to `user` in their window, then
    /// answers each with 45047 (`out of response count limit`), as when another system
    /// has sent the rest of the user's quota. Called again, a new window (the user's next
    /// action).
    pub fn limit_user(&self, user: &str, n: usize) {
        self.state
            .allowance
            .lock()
            .unwrap()
            .insert(user.to_owned(), n);
    }

    /// How many sends to `user` reached WeChat (past the token check), delivered or not.
    pub fn attempts_to(&self, user: &str) -> usize {
        self.state
            .attempts
            .lock()
            .unwrap()
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    /// `stable_token` misbehaves from now on.
    pub fn misbehave(&self, how: Misbehave) {
        *self.state.misbehave.lock().unwrap() = Some(how);
    }

    /// Bytes of an endless answer handed to the connection so far.
    pub fn streamed(&self) -> usize {
        self.state.streamed.load(Ordering::SeqCst)
    }

    /// Forgets the scripted answers not given yet: messages are delivered again.
    pub fn clear_script(&self) {
        self.state.script.lock().unwrap().clear();
    }

    /// The token stops working (as after its 2 hours): the next call gets 42001.
    pub fn expire_token(&self) {
        *self.state.valid.lock().unwrap() = None;
    }

    /// The messages delivered so far.
    pub fn delivered(&self) -> Vec<Value> {
        self.state.delivered.lock().unwrap().clone()
    }

    /// How many messages were delivered so far.
    pub fn delivered_count(&self) -> usize {
        self.state.delivered.lock().unwrap().len()
    }

    /// Waits (10 s at most) until `n` messages have been delivered; returns them. Async:
    /// the outbox under test runs on the test's own runtime.
    pub async fn wait_delivered(&self, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if self.delivered_count() >= n || Instant::now() > until {
                return self.delivered();
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The menu calls so far (`menu/get`, `menu/create`, …), in order.
    pub fn menu_calls(&self) -> Vec<String> {
        self.state.menu_calls.lock().unwrap().clone()
    }

    /// Sets the live menu as `menu/get` will answer it (`{"button": …}`) and the
    /// conditional menus (each `{"button", "matchrule"}`), without counting a call.
    pub fn set_menu(&self, menu: Option<Value>, conditional: Vec<Value>) {
        *self.state.menu.lock().unwrap() = menu;
        *self.state.conditional.lock().unwrap() = conditional
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c["menuid"] = json!(format!("{}", 400 + i));
                c
            })
            .collect();
    }

    /// `media_id` is deleted, as in the MP console: a message that names it gets 40007.
    pub fn delete_material(&self, media_id: &str) {
        self.state.deleted.lock().unwrap().push(media_id.to_owned());
    }

    /// The files uploaded as permanent material so far.
    pub fn materials(&self) -> Vec<Uploaded> {
        self.state.materials.lock().unwrap().clone()
    }

    /// Keeps `bytes` as temporary media `media_id` of `content_type`, as `media/upload`
    /// would (a `video/…` one is given by `media/get` as a link).
    pub fn add_media(&self, media_id: &str, content_type: &str, bytes: &[u8]) {
        self.state.temporary.lock().unwrap().insert(
            media_id.to_owned(),
            (content_type.to_owned(), bytes.to_vec()),
        );
    }

    /// Keeps `material` as permanent material, as if uploaded in the MP console.
    pub fn add_permanent(&self, material: Uploaded) {
        self.state.materials.lock().unwrap().push(material);
    }

    /// The download calls so far (`media/get ID`, `get_material ID`, `video ID`), in order.
    pub fn downloads(&self) -> Vec<String> {
        self.state.downloads.lock().unwrap().clone()
    }

    pub fn stop(self) {
        actix_web::rt::System::new().block_on(self.handle.stop(false));
    }
}

fn errcode(code: i64, msg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"errcode": code, "errmsg": msg}))
}

/// WeChat's errmsg for the errcodes of `custom/send` tests meet; `or` for others.
fn errmsg(code: i64, or: &str) -> &str {
    match code {
        -1 => "system error",
        45015 => "response out of time limit or subscription is canceled",
        45047 => "out of response count limit",
        _ => or,
    }
}

async fn stable_token(state: web::Data<FakeState>, body: web::Json<Value>) -> HttpResponse {
    state.token_calls.fetch_add(1, Ordering::SeqCst);
    match state.misbehave.lock().unwrap().clone() {
        Some(Misbehave::RedirectTo(url)) => {
            return HttpResponse::TemporaryRedirect()
                .insert_header(("Location", url))
                .finish()
        }
        Some(Misbehave::Endless(bytes)) => return endless(&state.streamed, bytes),
        None => {}
    }
    if body["grant_type"] != "client_credential" {
        return errcode(40002, "invalid grant_type");
    }
    if body["appid"] != APPID {
        return errcode(40013, "invalid appid");
    }
    if body["secret"] != SECRET {
        return errcode(40125, "invalid appsecret");
    }
    let force = body["force_refresh"].as_bool().unwrap_or(false);
    let mut valid = state.valid.lock().unwrap();
    if force || valid.is_none() {
        let n = state.issued.fetch_add(1, Ordering::SeqCst);
        *valid = Some(format!("ACCESS_TOKEN_{n}"));
    }
    HttpResponse::Ok().json(json!({"access_token": valid.clone(), "expires_in": 7200}))
}

/// A 200 answer of `bytes` bytes, made as the client reads it, 64 KiB at a time; `streamed`
/// counts what was handed over.
fn endless(streamed: &Arc<AtomicUsize>, bytes: usize) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(Endless {
            left: bytes,
            first: true,
            streamed: Arc::clone(streamed),
        })
}

/// The body of `endless`: chunked (no Content-Length), each chunk made when asked for.
struct Endless {
    left: usize,
    first: bool,
    streamed: Arc<AtomicUsize>,
}

impl actix_web::body::MessageBody for Endless {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        const CHUNK: usize = 64 * 1024;
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(CHUNK);
        self.left -= n;
        let mut chunk = if self.first {
            b"{\"access_token\":\"".to_vec()
        } else {
            Vec::new()
        };
        self.first = false;
        chunk.resize(n, b'a');
        self.streamed.fetch_add(n, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(web::Bytes::from(chunk))))
    }
}

/// WeChat's answer to a call whose `access_token` is not the one that works now (42001 when
/// none does, 40001 otherwise); `None` for the good one.
fn refuse_token(state: &FakeState, req: &HttpRequest) -> Option<HttpResponse> {
    let token = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .unwrap_or("");
    match state.valid.lock().unwrap().as_deref() {
        None => Some(errcode(42001, "access_token expired")),
        Some(valid) if valid != token => Some(errcode(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )),
        Some(_) => None,
    }
}

/// `GET /cgi-bin/get_current_autoreply_info`: the console export of
/// `tests/data/console/autoreply.json`, to a valid token.
async fn autoreply_info(state: web::Data<FakeState>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = refuse_token(&state, &req) {
        return refused;
    }
    let export = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/console/autoreply.json"),
    )
    .unwrap();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(export)
}

async fn custom_send(
    state: web::Data<FakeState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    state.send_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = refuse_token(&state, &req) {
        return refused;
    }
    let to = body["touser"].as_str().unwrap_or("").to_owned();
    *state
        .attempts
        .lock()
        .unwrap()
        .entry(to.clone())
        .or_default() += 1;
    if let Some(&code) = state.failing.lock().unwrap().get(&to) {
        return errcode(code, errmsg(code, "failing user"));
    }
    if let Some(next) = state.script.lock().unwrap().pop_front() {
        return match next {
            Scripted::Errcode(code) => errcode(code, errmsg(code, "scripted")),
            Scripted::Status(status) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
            }
        };
    }
    let body = body.into_inner();
    let kind = body["msgtype"].as_str().unwrap_or("");
    if let Some(media_id) = body[kind]["media_id"].as_str() {
        if state.deleted.lock().unwrap().iter().any(|d| d == media_id) {
            return errcode(40007, "invalid media_id");
        }
    }
    if body["touser"].as_str().is_none_or(str::is_empty) || body[kind].is_null() {
        return errcode(44002, "empty post data");
    }
    if let Some(left) = state.allowance.lock().unwrap().get_mut(&to) {
        if *left == 0 {
            return errcode(45047, errmsg(45047, ""));
        }
        *left -= 1;
    }
    state.delivered.lock().unwrap().push(body);
    errcode(0, "ok")
}

/// Records a menu call; WeChat's answer when its token is no good (the call then does
/// nothing), as `refuse_token`.
fn menu_call(state: &FakeState, req: &HttpRequest, call: &str) -> Option<HttpResponse> {
    if let Some(refused) = refuse_token(state, req) {
        return Some(refused);
    }
    state.menu_calls.lock().unwrap().push(call.to_owned());
    None
}

/// What WeChat says of `buttons` (a default or conditional menu's), with the errcodes
/// it documents: 40016 for the number of buttons, 40017 a type, 40018 a name's length,
/// 40019 a key's, 40020 a URL's, 40023 the number of sub-buttons, 40025 a sub-button's
/// name; `None` when they are good.
fn menu_problem(buttons: &Value) -> Option<HttpResponse> {
    const TYPES: [&str; 13] = [
        "click",
        "view",
        "miniprogram",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
        "media_id",
        "view_limited",
        "article_id",
        "article_view_limited",
    ];
    let list = buttons.as_array()?;
    if list.is_empty() || list.len() > 3 {
        return Some(errcode(40016, "invalid button size"));
    }
    let leaf = |b: &Value, name_max: usize| -> Option<HttpResponse> {
        let name = b["name"].as_str().unwrap_or("");
        if name.is_empty() || name.len() > name_max {
            return Some(if name_max == 16 {
                errcode(40018, "invalid button name size")
            } else {
                errcode(40025, "invalid sub button name size")
            });
        }
        let kind = b["type"].as_str().unwrap_or("");
        if !TYPES.contains(&kind) {
            return Some(errcode(40017, "invalid button type"));
        }
        if b["key"].as_str().is_some_and(|k| k.len() > 128) {
            return Some(errcode(40019, "invalid button key size"));
        }
        if b["url"].as_str().is_some_and(|u| u.len() > 1024) {
            return Some(errcode(40020, "invalid button url size"));
        }
        None
    };
    for b in list {
        match b["sub_button"].as_array() {
            Some(subs) if !subs.is_empty() => {
                let name = b["name"].as_str().unwrap_or("");
                if name.is_empty() || name.len() > 16 {
                    return Some(errcode(40018, "invalid button name size"));
                }
                if subs.len() > 5 {
                    return Some(errcode(40023, "invalid sub button size"));
                }
                if let Some(bad) = subs.iter().find_map(|s| leaf(s, 60)) {
                    return Some(bad);
                }
            }
            _ => {
                if let Some(bad) = leaf(b, 16) {
                    return Some(bad);
                }
            }
        }
    }
    None
}

/// Buttons as `menu/get` answers them: every action with an empty `sub_button`.
fn as_answered(buttons: &Value) -> Value {
    let mut buttons = buttons.clone();
    if let Some(list) = buttons.as_array_mut() {
        for b in list {
            if b.get("sub_button").is_none() {
                b["sub_button"] = json!([]);
            } else if let Some(subs) = b["sub_button"].as_array_mut() {
                for s in subs {
                    s["sub_button"] = json!([]);
                }
            }
        }
    }
    buttons
}

/// `GET /cgi-bin/menu/get`: 46003 without a menu; else the menu and the conditional ones.
async fn menu_get(state: web::Data<FakeState>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = menu_call(&state, &req, "menu/get") {
        return refused;
    }
    let Some(menu) = state.menu.lock().unwrap().clone() else {
        return errcode(46003, "menu no exist");
    };
    let mut answer = json!({"menu": {"button": as_answered(&menu["button"]), "menuid": 100}});
    let conditional = state.conditional.lock().unwrap().clone();
    if !conditional.is_empty() {
        answer["conditionalmenu"] = conditional
            .into_iter()
            .map(|mut c| {
                c["button"] = as_answered(&c["button"]);
                c
            })
            .collect();
    }
    HttpResponse::Ok().json(answer)
}

/// `POST /cgi-bin/menu/create`: replaces the default menu (conditional ones stay).
async fn menu_create(
    state: web::Data<FakeState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if let Some(refused) = menu_call(&state, &req, "menu/create") {
        return refused;
    }
    if let Some(bad) = menu_problem(&body["button"]) {
        return bad;
    }
    *state.menu.lock().unwrap() = Some(json!({"button": body["button"]}));
    errcode(0, "ok")
}

/// `POST /cgi-bin/menu/addconditional`: 65303 without a default menu, 65304 for an empty
/// matchrule, 65320 for the private criteria WeChat no longer takes.
async fn menu_addconditional(
    state: web::Data<FakeState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if let Some(refused) = menu_call(&state, &req, "menu/addconditional") {
        return refused;
    }
    if state.menu.lock().unwrap().is_none() {
        return errcode(65303, "there is no selfmenu, please create selfmenu first");
    }
    let rule = &body["matchrule"];
    if ["sex", "country", "province", "city", "language"]
        .iter()
        .any(|k| rule[k].as_str().is_some_and(|v| !v.is_empty()))
    {
        return errcode(
            65320,
            "invalid matchrule: private information is not supported",
        );
    }
    if ["tag_id", "client_platform_type"]
        .iter()
        .all(|k| rule[k].as_str().is_none_or(str::is_empty))
    {
        return errcode(65304, "match rule empty");
    }
    if let Some(bad) = menu_problem(&body["button"]) {
        return bad;
    }
    let mut conditional = state.conditional.lock().unwrap();
    let id = format!("{}", 208379533 + conditional.len());
    conditional.push(json!({"button": body["button"], "matchrule": rule, "menuid": id}));
    HttpResponse::Ok().json(json!({"menuid": id}))
}

/// `GET /cgi-bin/menu/delete`: the menu and every conditional menu.
async fn menu_delete(state: web::Data<FakeState>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = menu_call(&state, &req, "menu/delete") {
        return refused;
    }
    *state.menu.lock().unwrap() = None;
    state.conditional.lock().unwrap().clear();
    errcode(0, "ok")
}

/// The parts of a `multipart/form-data` body: (name, filename, bytes).
fn form_parts(content_type: &str, body: &[u8]) -> Vec<(String, Option<String>, Vec<u8>)> {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return Vec::new();
    };
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = match find(body, delimiter.as_bytes(), 0) {
        Some(at) => at + delimiter.len(),
        None => return parts,
    };
    while body.get(at..at + 2) == Some(b"\r\n") {
        let Some(head_end) = find(body, b"\r\n\r\n", at) else {
            break;
        };
        let head = String::from_utf8_lossy(&body[at + 2..head_end]).to_string();
        let Some(next) = find(body, format!("\r\n{delimiter}").as_bytes(), head_end) else {
            break;
        };
        let value = |key: &str| {
            head.split(&format!("{key}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        };
        if let Some(name) = value(" name") {
            parts.push((name, value("filename"), body[head_end + 4..next].to_vec()));
        }
        at = next + 2 + delimiter.len();
    }
    parts
}

/// `POST /cgi-bin/material/add_material?type=…`: the form's `media` (and a video's
/// `description`), with WeChat's limits: 40004 for a type it does not take, 40005 for a
/// format the type does not take, 40006 for a size over the type's limit, 41005 without
/// `media`. A permanent id and, for an image, its URL.
async fn add_material(
    state: web::Data<FakeState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refused) = refuse_token(&state, &req) {
        return refused;
    }
    let kind = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("type="))
        .unwrap_or("")
        .to_owned();
    let (formats, limit): (&[&str], usize) = match kind.as_str() {
        "image" => (&["bmp", "png", "jpeg", "jpg", "gif"], 10 * 1024 * 1024),
        "voice" => (&["mp3", "wma", "wav", "amr"], 2 * 1024 * 1024),
        "video" => (&["mp4"], 10 * 1024 * 1024),
        "thumb" => (&["jpg"], 64 * 1024),
        _ => return errcode(40004, "invalid media type"),
    };
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = form_parts(content_type, &body);
    let Some((_, Some(filename), bytes)) = parts.iter().find(|(n, _, _)| n == "media").cloned()
    else {
        return errcode(41005, "media data missing");
    };
    let extension = filename
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !formats.contains(&extension.as_str()) {
        return errcode(40005, "invalid file type");
    }
    if bytes.len() > limit {
        return errcode(40006, "invalid meida size");
    }
    let description = parts
        .iter()
        .find(|(n, _, _)| n == "description")
        .and_then(|(_, _, d)| serde_json::from_slice(d).ok());
    let mut materials = state.materials.lock().unwrap();
    let media_id = format!("PERMANENT_{kind}_{}", materials.len());
    materials.push(Uploaded {
        kind: kind.clone(),
        filename,
        bytes,
        description,
        media_id: media_id.clone(),
    });
    let mut answer = json!({"media_id": media_id});
    if kind == "image" {
        answer["url"] = json!(format!("http://mmbiz.qpic.cn/{media_id}"));
    }
    HttpResponse::Ok().json(answer)
}

/// The extension WeChat gives a file of `content_type` in its `Content-Disposition`.
fn extension_of(content_type: &str) -> &str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "audio/amr" => "amr",
        "audio/mpeg" => "mp3",
        "audio/speex" => "speex",
        "video/mp4" => "mp4",
        _ => "bin",
    }
}

/// `GET /cgi-bin/media/get?access_token=…&media_id=…`: a temporary media's bytes, with
/// `Content-Type` and `Content-Disposition: attachment; filename="MEDIA_ID.ext"`; a video
/// as `{"video_url": …}` (over http, as WeChat gives it); 40007 for an id it does not have.
async fn media_get(state: web::Data<FakeState>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = refuse_token(&state, &req) {
        return refused;
    }
    let media_id = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("media_id="))
        .unwrap_or("")
        .to_owned();
    state
        .downloads
        .lock()
        .unwrap()
        .push(format!("media/get {media_id}"));
    let found = state.temporary.lock().unwrap().get(&media_id).cloned();
    let Some((content_type, bytes)) = found else {
        return errcode(40007, "invalid media_id");
    };
    if content_type.starts_with("video/") {
        let host = req.connection_info().host().to_owned();
        return HttpResponse::Ok()
            .json(json!({"video_url": format!("http://{host}/video/{media_id}")}));
    }
    HttpResponse::Ok()
        .content_type(content_type.as_str())
        .insert_header((
            "Content-Disposition",
            format!(
                "attachment; filename=\"{media_id}.{}\"",
                extension_of(&content_type)
            ),
        ))
        .body(bytes)
}

/// `POST /cgi-bin/material/get_material` with `{"media_id"}`: permanent material's bytes
/// (`application/octet-stream`); a video as `{"title", "description", "down_url"}`; 40007
/// for an id it does not have, or one deleted.
async fn get_material(
    state: web::Data<FakeState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if let Some(refused) = refuse_token(&state, &req) {
        return refused;
    }
    let media_id = body["media_id"].as_str().unwrap_or("").to_owned();
    state
        .downloads
        .lock()
        .unwrap()
        .push(format!("get_material {media_id}"));
    if state.deleted.lock().unwrap().contains(&media_id) {
        return errcode(40007, "invalid media_id");
    }
    let found = state
        .materials
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.media_id == media_id)
        .cloned();
    let Some(material) = found else {
        return errcode(40007, "invalid media_id");
    };
    if material.kind == "video" {
        let host = req.connection_info().host().to_owned();
        let description = material.description.unwrap_or(Value::Null);
        return HttpResponse::Ok().json(json!({
            "title": description["title"],
            "description": description["introduction"],
            "down_url": format!("http://{host}/video/{media_id}"),
        }));
    }
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(material.bytes)
}

/// `GET /video/MEDIA_ID`: a video's download link, as `media/get` and `get_material` give
/// it (no token: the link is the credential).
async fn video_download(state: web::Data<FakeState>, media_id: web::Path<String>) -> HttpResponse {
    let media_id = media_id.into_inner();
    state
        .downloads
        .lock()
        .unwrap()
        .push(format!("video {media_id}"));
    let temporary = state.temporary.lock().unwrap().get(&media_id).cloned();
    let bytes = temporary.map(|(_, bytes)| bytes).or_else(|| {
        state
            .materials
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.media_id == media_id)
            .map(|m| m.bytes.clone())
    });
    match bytes {
        Some(bytes) => HttpResponse::Ok().content_type("video/mp4").body(bytes),
        None => HttpResponse::NotFound().finish(),
    }
}
