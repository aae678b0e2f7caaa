//! An account's own service on 127.0.0.1, for the tests of rules' `call`s: a real HTTP
//! server (actix-web on its own thread) that records every request as it came (method, raw
//! path and query, headers, body) and answers by its path:
//!
//! | path | answer |
//! | --- | --- |
//! | `/orders/ID` | `{"status": "已发货", "order": ID}` (ID decoded) |
//! | `/status/CODE` | that HTTP status, a JSON body |
//! | `/not-json` | 200, `text/plain` |
//! | `/array` | 200, `[1, 2]` |
//! | `/too-large` | 200, a JSON object of 70 KiB |
//! | `/too-large-chunked` | 200, the same, chunked (no Content-Length) |
//! | `/slow/MS` | waits MS ms, then `{"answer": "想好了"}` |
//! | `/decide` | `{"reply": {"text": "a ]]> b {{FromUserName}}"}}` |
//! | `/ignore` | `{"ignore": true}` |
//! | `/markdown` | `{"answer": "## 标题…"}` (Markdown) |
//! | `/deferred` | 202, no body (the answer is delivered later, by the test) |
//! | `/long` | `{"text": long_answer()}` (over 5,000 bytes) |
//! | anything else | `{"ok": true}` |

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

/// One request the service received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The path and query exactly as sent, percent-encoding included.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub struct Backend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Backend {
    /// Starts the service on a free loopback port.
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&received);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::from(Arc::clone(&shared)))
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .default_service(web::to(answer))
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
        Backend {
            addr,
            received,
            handle,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests so far.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Stop without waiting: the test's runtime may be gone.
        drop(self.handle.stop(false));
    }
}

/// A loopback address where nothing listens (bound, then closed).
pub fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn answer(
    received: web::Data<Mutex<Vec<Received>>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    received.lock().unwrap().push(Received {
        method: req.method().as_str().to_owned(),
        target: target.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let path = req.path();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next().unwrap_or(""), parts.next()) {
        ("orders", Some(id)) => {
            let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
            HttpResponse::Ok().json(json!({"status": "已发货", "order": id}))
        }
        ("status", Some(code)) => {
            let code = actix_web::http::StatusCode::from_u16(code.parse().unwrap()).unwrap();
            HttpResponse::build(code).json(json!({"error": "scripted"}))
        }
        ("not-json", _) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("status: shipped"),
        ("array", _) => HttpResponse::Ok().json(json!([1, 2])),
        ("too-large", _) => HttpResponse::Ok().json(json!({"status": "x".repeat(70 * 1024)})),
        ("too-large-chunked", _) => HttpResponse::Ok()
            .content_type("application/json")
            .body(Chunked(70)),
        ("slow", Some(ms)) => {
            actix_web::rt::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            HttpResponse::Ok().json(json!({"answer": "想好了"}))
        }
        ("decide", _) => {
            HttpResponse::Ok().json(json!({"reply": {"text": "a ]]> b {{FromUserName}}"}}))
        }
        ("ignore", _) => HttpResponse::Ok().json(json!({"ignore": true})),
        ("long", _) => HttpResponse::Ok().json(json!({"text": long_answer()})),
        ("deferred", _) => HttpResponse::Accepted().finish(),
        ("markdown", _) => HttpResponse::Ok()
            .json(json!({"answer": "## 标题\n\n**粗体**说明：\n\n- 第一\n- 第二\n"})),
        _ => HttpResponse::Ok().json(json!({"ok": true})),
    }
}

/// What `/long` answers as `text`: over 5,000 bytes of Chinese, emoji (with a ZWJ
/// sequence) and links, as an AI assistant writes.
pub fn long_answer() -> String {
    let mut text = String::new();
    for i in 1..=24 {
        text.push_str(&format!(
            "第{i}段：您好👋，这是关于订单的详细说明，请查看 https://example.com/orders/{i}?from=wechat&lang=zh 了解更多。\
             配送预计需要三到五个工作日👨‍👩‍👧，如有问题请随时联系我们。\n\n"
        ));
    }
    text
}

/// A JSON object of `self.0` KiB written in 1 KiB chunks, its size untold (chunked).
struct Chunked(usize);

impl actix_web::body::MessageBody for Chunked {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        let chunk = match self.0 {
            0 => return std::task::Poll::Ready(None),
            1 => "x\"}".to_owned(),
            70 => format!("{{\"status\": \"{}", "x".repeat(1024)),
            _ => "x".repeat(1024),
        };
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(web::Bytes::from(chunk))))
    }
}
