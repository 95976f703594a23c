//! chat_server: a blind relay for end-to-end encrypted chat.
//!
//! One message's path, top to bottom:
//! [`server`] accepts a TCP connection and spawns its thread ->
//! [`connection`] upgrades it, runs the secure channel handshake
//! ([`channel`]), authenticates ([`connection::auth`]) and reads commands
//! ([`protocol`]) -> [`dispatcher`] (one thread: sessions, presence, routing)
//! pushes into the recipient's [`outbox`] -> the recipient's connection
//! thread seals and writes it. Users and offline messages live in a
//! [`store`] (MySQL/MariaDB or embedded SQLite). [`client`] is the same
//! protocol from the other side, for tests, tools and benchmarks; [`web`]
//! serves the browser client on the same port.

pub mod admin;
pub mod bench;
pub mod channel;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod crypto;
pub mod dispatcher;
pub mod expiry;
pub mod gate;
pub mod http;
pub mod monitoring;
pub mod outbox;
pub mod password;
pub mod presence;
pub mod protocol;
pub mod quota;
pub mod rate;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod waker;
pub mod web;
