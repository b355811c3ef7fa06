//! The HTTP endpoint: `/metrics` (Prometheus text format), `/findings`
//! (the diagnosis of the last five minutes, JSON) and `/healthz`.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

/// Renders a response body now.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// What the endpoint serves.
#[derive(Clone)]
pub struct Pages {
    /// `/metrics`: the Prometheus text format.
    pub metrics: Render,
    /// `/findings`: the diagnosis of the last five minutes, JSON.
    pub findings: Render,
}

/// Binds the listen address, with an error that says what to do.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {addr}: address already in use (is another pgpreempt running? pick another with --listen)")
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn respond(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

async fn handle(req: Request<Incoming>, pages: Pages) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            (pages.metrics)(),
        ),
        "/findings" => respond(StatusCode::OK, "application/json", (pages.findings)()),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/" => respond(
            StatusCode::OK,
            "text/plain",
            "pgpreempt: lock-holder preemption metrics for PostgreSQL. See /metrics, and /findings for the diagnosis of the last five minutes.\n".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

/// Serves until `shutdown` changes.
pub async fn serve(
    listener: std::net::TcpListener,
    pages: Pages,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot serve: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let pages = pages.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, pages.clone()));
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                        log::debug!("http connection: {e}");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}
