//! `GET /healthz` and `GET /metrics` on the chat port.
//!
//! `/healthz` answers anyone: 200 `ok` when the store answers a ping, 503
//! otherwise (the ping runs on the asking connection's thread, bounded by
//! the store's own timeouts). `/metrics` answers loopback addresses only,
//! unless `CHAT_METRICS_PUBLIC` allows every address; others get 403.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Metrics;
use crate::http::{Handler, RequestHead, Response};
use crate::store::Store;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /healthz`.
pub struct HealthHandler {
    store: Arc<dyn Store>,
}

impl HealthHandler {
    pub fn new(store: Arc<dyn Store>) -> HealthHandler {
        HealthHandler { store }
    }
}

impl Handler for HealthHandler {
    fn respond(&self, request: &RequestHead, peer: SocketAddr) -> Option<Response> {
        if request.path() != "/healthz" {
            return None;
        }
        Some(match self.store.ping() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(error) => {
                log::warn!("{peer}: health check: {error}");
                Response::text(503, "store unavailable\n")
            }
        })
    }
}

/// `GET /metrics`.
pub struct MetricsHandler {
    metrics: Metrics,
    /// Whether addresses other than loopback may read the metrics.
    public: bool,
}

impl MetricsHandler {
    pub fn new(metrics: Metrics, public: bool) -> MetricsHandler {
        MetricsHandler { metrics, public }
    }
}

impl Handler for MetricsHandler {
    fn respond(&self, request: &RequestHead, peer: SocketAddr) -> Option<Response> {
        if request.path() != "/metrics" {
            return None;
        }
        if !self.public && !peer.ip().is_loopback() {
            return Some(Response::text(
                403,
                "metrics are served to loopback addresses only\n",
            ));
        }
        Some(
            Response::new(200, PROMETHEUS_TEXT, self.metrics.render().into_bytes())
                .with_header("Cache-Control", "no-store"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn get(path: &str) -> RequestHead {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        RequestHead::parse(raw.as_bytes())
            .expect("valid")
            .expect("complete")
    }

    #[test]
    fn metrics_are_for_loopback_unless_public() {
        let handler = MetricsHandler::new(Metrics::new(), false);
        let local: SocketAddr = "127.0.0.1:5".parse().expect("address");
        let remote: SocketAddr = "192.0.2.7:5".parse().expect("address");
        assert_eq!(
            handler.respond(&get("/metrics"), local).map(|r| r.status),
            Some(200)
        );
        assert_eq!(
            handler.respond(&get("/metrics"), remote).map(|r| r.status),
            Some(403)
        );
        assert!(handler.respond(&get("/other"), local).is_none());
        let public = MetricsHandler::new(Metrics::new(), true);
        assert_eq!(
            public.respond(&get("/metrics"), remote).map(|r| r.status),
            Some(200)
        );
    }

    #[test]
    fn health_is_ok_while_the_store_answers() {
        let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let handler = HealthHandler::new(store);
        let peer: SocketAddr = "192.0.2.7:5".parse().expect("address");
        let answer = handler.respond(&get("/healthz"), peer).expect("served");
        assert_eq!(answer.status, 200);
    }
}
