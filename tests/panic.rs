//! Panic isolation (README.md, "Limits and security", "Faults"): a panic in one connection
//! thread ends that connection only. The trigger is a store, supplied by
//! this test, that panics on one name; production code has no test hook.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use chat_server::client::Client;
use chat_server::store::{NewOffline, OfflineMessage, SqliteStore, Store, StoreError, UserRecord};
use common::{assert_server_works, login, user, TestServer, WAIT};

/// A SQLite store whose `find_user("boom")` panics.
struct PanickyStore(SqliteStore);

impl Store for PanickyStore {
    fn backend_name(&self) -> String {
        self.0.backend_name()
    }
    fn create_user(&self, name: &str, hash: &str, key: &str) -> Result<(), StoreError> {
        self.0.create_user(name, hash, key)
    }
    fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        assert_ne!(username, "boom", "injected store fault");
        self.0.find_user(username)
    }
    fn set_password_hash(&self, id: i64, hash: &str) -> Result<(), StoreError> {
        self.0.set_password_hash(id, hash)
    }
    fn set_public_key(&self, id: i64, key: &str) -> Result<(), StoreError> {
        self.0.set_public_key(id, key)
    }
    fn all_usernames(&self) -> Result<Vec<String>, StoreError> {
        self.0.all_usernames()
    }
    fn store_offline(&self, from: &str, to: &str, payload: &str) -> Result<i64, StoreError> {
        self.0.store_offline(from, to, payload)
    }
    fn store_offline_batch(
        &self,
        msgs: &[NewOffline<'_>],
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
        self.0.store_offline_batch(msgs)
    }
    fn fetch_offline(
        &self,
        recipient: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StoreError> {
        self.0.fetch_offline(recipient, after_id, limit)
    }
    fn delete_offline(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.0.delete_offline(ids)
    }
    fn count_offline(&self, recipient: &str) -> Result<u64, StoreError> {
        self.0.count_offline(recipient)
    }
    fn ping(&self) -> Result<(), StoreError> {
        self.0.ping()
    }
}

/// Alice's thread panics (her GET_PUBLIC_KEY hits the faulty store): her
/// connection ends, bob sees her offline and keeps being served, and alice
/// logs in again and chats with bob.
#[test]
fn a_panicking_connection_ends_alone() {
    let path = std::env::temp_dir().join(format!("chat_server_panic_{}.db", std::process::id()));
    let store = PanickyStore(SqliteStore::open(&path).expect("store opens"));
    let server = TestServer::start_on_store(Arc::new(store), Some(PathBuf::from(&path)), |_| {});
    let (mut alice, alice_identity) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    bob.wait_user_online("alice", WAIT).unwrap();
    alice.get_public_key("boom").unwrap();
    alice.wait_closed(WAIT).expect("alice's connection ends");
    bob.wait_user_offline("alice", WAIT)
        .expect("the dispatcher was told");
    let mut alice = login(&server, "alice", &alice_identity);
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("paired");
    alice.send_message("bob", "back again").unwrap();
    assert_eq!(bob.wait_message_from("alice", WAIT).unwrap(), "back again");
    assert_server_works(&server);
}
