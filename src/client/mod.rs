//! Client library (tests, tools): identity keys, the peer E2EE layer, the
//! connection to the server and a synchronous chat client on top.

pub mod e2ee;
pub mod identity;

pub use e2ee::{PeerAction, PeerSession, PeerSessions, RekeyPolicy};
pub use identity::Identity;
