//! A fake of WeChat's API on 127.0.0.1, for the tests: `POST /cgi-bin/stable_token` and
//! `POST /cgi-bin/message/custom/send`, answering with WeChat's documented JSON and errcodes
//! (40125 for a wrong secret, 40001/42001 for a token that is no good, `{"errcode":0,
//! "errmsg":"ok"}` for a delivered message). A test can script the next answers of
//! `custom/send`, fail every send to one user, expire the token, make `stable_token`
//! misbehave (a redirect, an endless answer), and read what was delivered, in order.

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
    misbehave: Mutex<Option<Misbehave>>,
    /// Bytes of an endless answer handed to the connection so far.
    streamed: Arc<AtomicUsize>,
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

    pub fn stop(self) {
        actix_web::rt::System::new().block_on(self.handle.stop(false));
    }
}

fn errcode(code: i64, msg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"errcode": code, "errmsg": msg}))
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
    if let Some(&code) = state.failing.lock().unwrap().get(&to) {
        return errcode(code, "failing user");
    }
    if let Some(next) = state.script.lock().unwrap().pop_front() {
        return match next {
            Scripted::Errcode(-1) => errcode(-1, "system error"),
            Scripted::Errcode(45015) => errcode(
                45015,
                "response out of time limit or subscription is canceled",
            ),
            Scripted::Errcode(code) => errcode(code, "scripted"),
            Scripted::Status(status) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
            }
        };
    }
    let body = body.into_inner();
    let kind = body["msgtype"].as_str().unwrap_or("");
    if body["touser"].as_str().is_none_or(str::is_empty) || body[kind].is_null() {
        return errcode(44002, "empty post data");
    }
    state.delivered.lock().unwrap().push(body);
    errcode(0, "ok")
}
