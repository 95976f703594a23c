//! Health and metrics: the [`Metrics`] of one server (Prometheus
//! collectors in their own registry, so several servers in one process keep
//! separate counts), the [`MeteredStore`] that times every store call and
//! counts offline messages stored and delivered, and the HTTP handlers for
//! `GET /healthz` and `GET /metrics` ([`handlers`]).
//!
//! Everything is synchronous: counters are atomics updated by the thread
//! that does the work; `/metrics` encodes a snapshot on the connection
//! thread that asked.

pub mod handlers;
mod store;

pub use self::handlers::{HealthHandler, MetricsHandler};
pub use self::store::MeteredStore;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Every metric of one server.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Client connections open now (admitted at accept, until their thread ends).
    pub connections_open: IntGauge,
    /// Users with a live session now.
    pub users_online: IntGauge,
    /// Encrypted WebSocket text frames received after the upgrade.
    pub frames_in: IntCounter,
    /// Encrypted WebSocket text frames sent.
    pub frames_out: IntCounter,
    /// Relays (messages, key exchanges, typing) handed to an online recipient.
    pub messages_routed: IntCounter,
    /// Presence broadcasts: a new user list handed to every online user.
    pub presence_broadcasts: IntCounter,
    /// User lists sealed and sent (each online user gets at most the latest
    /// list of a broadcast; one still unsent is replaced, not sent twice).
    pub user_lists_sent: IntCounter,
    /// `REQUEST_USER_LIST`s answered by the pending broadcast (a login
    /// burst) rather than by a list of their own.
    pub list_requests_coalesced: IntCounter,
    /// Messages written to the offline store.
    pub offline_stored: IntCounter,
    /// Offline messages delivered (written to the recipient, then deleted).
    pub offline_delivered: IntCounter,
    /// Offline messages deleted by the expiry thread.
    pub offline_expired: IntCounter,
    /// Answers to auth commands, by `kind` (register, password, challenge,
    /// other) and `result` (success, failure, username_exists, error).
    pub auth: IntCounterVec,
    /// Channel key renewals completed.
    pub renegotiations: IntCounter,
    /// Connections refused at accept, by `reason`.
    pub rejected_connections: IntCounterVec,
    /// Store call durations in seconds, by `operation`.
    pub store_latency: HistogramVec,
}

/// Metric names start with this.
const NAMESPACE: &str = "chat";

impl Metrics {
    /// A fresh set of metrics in a registry of its own.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            connections_open: IntGauge::with_opts(opts(
                "connections_open",
                "Client connections open now",
            ))
            .expect("valid metric"),
            users_online: IntGauge::with_opts(opts("users_online", "Users with a live session"))
                .expect("valid metric"),
            frames_in: counter("frames_in_total", "WebSocket text frames received"),
            frames_out: counter("frames_out_total", "WebSocket text frames sent"),
            messages_routed: counter(
                "messages_routed_total",
                "Relays handed to an online recipient",
            ),
            presence_broadcasts: counter(
                "presence_broadcasts_total",
                "User lists handed to every online user",
            ),
            user_lists_sent: counter("user_lists_sent_total", "User lists sealed and sent"),
            list_requests_coalesced: counter(
                "user_list_requests_coalesced_total",
                "User list requests answered by the pending broadcast of a login burst",
            ),
            offline_stored: counter(
                "offline_stored_total",
                "Messages written to the offline store",
            ),
            offline_delivered: counter(
                "offline_delivered_total",
                "Offline messages delivered and deleted",
            ),
            offline_expired: counter(
                "offline_expired_total",
                "Offline messages deleted because they were too old",
            ),
            auth: IntCounterVec::new(
                opts("auth_total", "Answers to auth commands"),
                &["kind", "result"],
            )
            .expect("valid metric"),
            renegotiations: counter("renegotiations_total", "Channel key renewals completed"),
            rejected_connections: IntCounterVec::new(
                opts(
                    "rejected_connections_total",
                    "Connections refused at accept",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            store_latency: HistogramVec::new(
                HistogramOpts::new("store_seconds", "Store call durations")
                    .namespace(NAMESPACE)
                    .buckets(exponential_buckets(0.0001, 4.0, 9).expect("valid buckets")),
                &["operation"],
            )
            .expect("valid metric"),
            registry,
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 15] = [
            Box::new(self.connections_open.clone()),
            Box::new(self.users_online.clone()),
            Box::new(self.frames_in.clone()),
            Box::new(self.frames_out.clone()),
            Box::new(self.messages_routed.clone()),
            Box::new(self.presence_broadcasts.clone()),
            Box::new(self.user_lists_sent.clone()),
            Box::new(self.list_requests_coalesced.clone()),
            Box::new(self.offline_stored.clone()),
            Box::new(self.offline_delivered.clone()),
            Box::new(self.offline_expired.clone()),
            Box::new(self.auth.clone()),
            Box::new(self.renegotiations.clone()),
            Box::new(self.rejected_connections.clone()),
            Box::new(self.store_latency.clone()),
        ];
        for collector in collectors {
            // Names are fixed and distinct: registering cannot collide.
            let _ = self.registry.register(collector);
        }
    }

    /// Counts one answer to an auth command.
    pub fn count_auth(&self, kind: &str, result: &str) {
        self.auth.with_label_values(&[kind, result]).inc();
    }

    /// Counts one connection refused at accept.
    pub fn count_rejected(&self, reason: &str) {
        self.rejected_connections.with_label_values(&[reason]).inc();
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("metrics not encoded: {error}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(opts(name, help)).expect("valid metric")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_names_every_metric() {
        let metrics = Metrics::new();
        metrics.frames_in.inc();
        metrics.count_auth("password", "success");
        metrics.count_rejected("total_limit");
        metrics
            .store_latency
            .with_label_values(&["ping"])
            .observe(0.001);
        let text = metrics.render();
        for line in [
            "chat_frames_in_total 1",
            "chat_auth_total{kind=\"password\",result=\"success\"} 1",
            "chat_rejected_connections_total{reason=\"total_limit\"} 1",
            "chat_store_seconds_count{operation=\"ping\"} 1",
            "chat_connections_open 0",
            "chat_users_online 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.contains("# TYPE chat_store_seconds histogram"));
    }
}
