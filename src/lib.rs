//! chat_server: a blind relay for end-to-end encrypted chat.

pub mod channel;
pub mod client;
pub mod crypto;
