//! The load baseline: a bare actix-web server that reads the POST body (64 KiB limit, as
//! wxrules) and answers a fixed passive-reply XML, with no signature check, parsing,
//! matching or rendering. `benches/load.sh` drives it and wxrules with the same load; its
//! requests/s and latency are the upper bound wxrules is measured against.
//!
//! It is also the account's service of the `call` workloads: `POST /service/…` reads the
//! body and answers a fixed JSON object at once, so that what `call` adds to a push is
//! measured against calling the service directly.
//!
//! `baseline [--listen 127.0.0.1:8081] [--workers N]`; port 0 picks a free port. Prints
//! `listening on ADDR` once bound.

use std::net::SocketAddr;
use std::process::ExitCode;

use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};

/// A text reply the size of wxrules' answer to `price` with the shipped rules.
const REPLY: &str = "<xml><ToUserName><![CDATA[oBenchUser]]></ToUserName>\
<FromUserName><![CDATA[gh_bench]]></FromUserName><CreateTime>1795737600</CreateTime>\
<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[本周价格：\n· 标准版 ¥99/月\n\
· 专业版 ¥199/月\n回复「订单+单号」查询订单，例如：订单 20261127001]]></Content></xml>";

async fn wechat(body: web::Bytes) -> HttpResponse {
    // The body is read whole, as wxrules reads it, then dropped.
    drop(body);
    HttpResponse::Ok()
        .content_type(ContentType::xml())
        .body(REPLY)
}

/// The service's answer: what an order service would say.
const SERVICE_ANSWER: &str = r#"{"status":"已发货","carrier":"顺丰","eta":"2026-12-02"}"#;

async fn service(body: web::Bytes) -> HttpResponse {
    drop(body);
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(SERVICE_ANSWER)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

fn parse_args() -> Result<(SocketAddr, Option<usize>), String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8081));
    let mut workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--workers" => {
                workers = Some(value()?.parse().map_err(|e| format!("--workers: {e}"))?);
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok((listen, workers))
}

fn main() -> ExitCode {
    let (listen, workers) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}\nusage: baseline [--listen ADDR] [--workers N]");
            return ExitCode::from(2);
        }
    };
    let served = actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(64 * 1024))
                .route("/wechat", web::post().to(wechat))
                .route("/service/{rest:.*}", web::post().to(service))
                .route("/healthz", web::get().to(healthz))
        });
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.bind(listen)?;
        for addr in server.addrs() {
            println!("listening on {addr}");
        }
        server.run().await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
