//! The mailbox from the dispatcher to one connection's thread.
//!
//! An [`Outbox`] is a bounded crossbeam queue of [`Outgoing`] items, a slot
//! that holds at most one unsent user list (a newer list replaces an older
//! one: clients only use the latest), a close request, and the [`Waker`] that
//! rouses the connection thread from `ppoll` (a signal, no descriptor). The dispatcher only ever uses the
//! non-blocking operations here, so a slow recipient can never stall it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use crate::protocol::{Payload, RelayKind};
use crate::waker::Waker;

/// One item the dispatcher hands to a connection thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A relayed `E2E_*` command, `from` its sender.
    Relay {
        kind: RelayKind,
        from: Arc<str>,
        payload: Payload,
    },
    /// A typing notice from `from`.
    Typing { from: Arc<str>, is_typing: bool },
    /// An `ERROR` frame for this connection's user.
    Error(&'static str),
    /// This connection's user sent an `E2E_MSG` to `to`, who is offline: the
    /// connection thread stores it (the dispatcher never touches the store).
    StoreOffline { to: Arc<str>, payload: Payload },
}

impl Outgoing {
    /// Whether losing this item would lose a user's message.
    pub fn is_message(&self) -> bool {
        matches!(
            self,
            Outgoing::Relay {
                kind: RelayKind::Message,
                ..
            } | Outgoing::StoreOffline { .. }
        )
    }
}

/// Why the dispatcher wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseRequest {
    /// The same user logged in on another connection.
    Replaced = 1,
    /// The outbox overflowed: the peer does not read fast enough.
    TooSlow = 2,
    /// The server is shutting down.
    Shutdown = 3,
}

/// The dispatcher's side of a connection's mailbox (shared with the
/// connection thread through an `Arc`).
#[derive(Debug)]
pub struct Outbox {
    /// Unbounded crossbeam channel (its blocks are allocated as items
    /// arrive and freed as they are read; a bounded one would allocate and
    /// touch all `capacity` slots up front, for every connection), bounded
    /// by `queued` < `capacity` here.
    queue: Sender<Outgoing>,
    queued: AtomicUsize,
    capacity: usize,
    /// A clone of the receiving end, so the dispatcher can take back what a
    /// replaced session never read.
    reclaim: Receiver<Outgoing>,
    /// Items accepted after the queue was full, only once a close was
    /// requested: bounded by what arrives before the dispatcher forgets it.
    overflow: Mutex<Vec<Outgoing>>,
    /// This connection's own messages for offline recipients
    /// ([`Outgoing::StoreOffline`]), outside the bounded queue: storing them
    /// is this thread's duty, not a sign that it reads too slowly. Bounded
    /// by what its user sent and the dispatcher already took: the thread
    /// stores them all each turn and reads nothing new while many wait.
    stores: Mutex<VecDeque<Outgoing>>,
    user_list: Mutex<Option<Arc<str>>>,
    /// Messages were stored for this connection's user after it asked for
    /// its mailbox: deliver the mailbox again.
    offline_waiting: AtomicBool,
    close: AtomicU8,
    waker: Waker,
}

impl Outbox {
    /// A mailbox holding at most `capacity` queued items, and the receiving
    /// end for the connection thread.
    pub fn new(capacity: usize) -> (Arc<Outbox>, Receiver<Outgoing>) {
        let (queue, receiver) = crossbeam_channel::unbounded();
        let outbox = Outbox {
            queue,
            queued: AtomicUsize::new(0),
            capacity,
            reclaim: receiver.clone(),
            overflow: Mutex::new(Vec::new()),
            stores: Mutex::new(VecDeque::new()),
            user_list: Mutex::new(None),
            offline_waiting: AtomicBool::new(false),
            close: AtomicU8::new(0),
            waker: Waker::new(),
        };
        (Arc::new(outbox), receiver)
    }

    /// Queues an item and wakes the connection; gives it back when full.
    /// Only the dispatcher pushes, so the bound check cannot race another
    /// push (reads only make room).
    pub fn push(&self, item: Outgoing) -> Result<(), Outgoing> {
        if self.queued.load(Ordering::SeqCst) >= self.capacity {
            return Err(item);
        }
        match self.queue.try_send(item) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(item) | TrySendError::Disconnected(item)) => Err(item),
        }
    }

    /// Queues an item even when the queue is full (into the overflow list).
    /// Only for the last items before a close: the caller must stop sending
    /// to this outbox afterwards.
    pub fn push_final(&self, item: Outgoing) {
        if let Err(item) = self.push(item) {
            lock(&self.overflow).push(item);
            self.waker.wake();
        }
    }

    /// Queues one of this connection's own messages for an offline
    /// recipient; never refused (see the `stores` field).
    pub fn push_store(&self, item: Outgoing) {
        lock(&self.stores).push_back(item);
        self.waker.wake();
    }

    /// Replaces the unsent user list, if any, with `list`.
    pub fn set_user_list(&self, list: Arc<str>) {
        *lock(&self.user_list) = Some(list);
        self.waker.wake();
    }

    /// Tells the connection that its user's mailbox got new messages.
    pub fn note_offline_waiting(&self) {
        self.offline_waiting.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Asks the connection thread to close. The first request wins.
    pub fn request_close(&self, reason: CloseRequest) {
        let _ = self
            .close
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Takes back every queued item the connection thread has not read yet.
    pub fn reclaim(&self) -> Vec<Outgoing> {
        let mut items: Vec<Outgoing> = self.reclaim.try_iter().collect();
        self.taken(items.len());
        items.append(&mut lock(&self.overflow));
        items
    }

    // --- the connection thread's side ---

    /// The pending close request, if any.
    pub fn close_requested(&self) -> Option<CloseRequest> {
        match self.close.load(Ordering::SeqCst) {
            1 => Some(CloseRequest::Replaced),
            2 => Some(CloseRequest::TooSlow),
            3 => Some(CloseRequest::Shutdown),
            _ => None,
        }
    }

    /// Whether the mailbox got new messages since the last call.
    pub fn take_offline_waiting(&self) -> bool {
        self.offline_waiting.swap(false, Ordering::SeqCst)
    }

    /// Whether a user list waits to be sent.
    pub fn has_user_list(&self) -> bool {
        lock(&self.user_list).is_some()
    }

    /// Takes the unsent user list.
    pub fn take_user_list(&self) -> Option<Arc<str>> {
        lock(&self.user_list).take()
    }

    /// Takes the next queued item: waiting offline stores first, then the
    /// queue, then overflow items.
    pub fn next(&self, receiver: &Receiver<Outgoing>) -> Option<Outgoing> {
        if let Some(store) = self.next_store() {
            return Some(store);
        }
        match receiver.try_recv() {
            Ok(item) => {
                self.taken(1);
                Some(item)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                let mut overflow = lock(&self.overflow);
                (!overflow.is_empty()).then(|| overflow.remove(0))
            }
        }
    }

    /// Counts `n` items read from the queue.
    fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
    }

    /// Takes the next waiting offline store only.
    pub fn next_store(&self) -> Option<Outgoing> {
        lock(&self.stores).pop_front()
    }

    /// How many offline stores wait.
    pub fn stores_waiting(&self) -> usize {
        lock(&self.stores).len()
    }

    /// The wake-up signal the connection thread attaches to and waits for.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the
/// values guarded here stay consistent whatever panicked).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: i64) -> Outgoing {
        Outgoing::Relay {
            kind: RelayKind::Message,
            from: Arc::from("ana"),
            payload: Payload::from_value(&n.into()),
        }
    }

    #[test]
    fn full_queue_gives_the_item_back() {
        let (outbox, receiver) = Outbox::new(2);
        assert!(outbox.push(message(1)).is_ok());
        assert!(outbox.push(message(2)).is_ok());
        assert_eq!(outbox.push(message(3)), Err(message(3)));
        outbox.push_final(message(3));
        let drained: Vec<_> = std::iter::from_fn(|| outbox.next(&receiver)).collect();
        assert_eq!(drained, vec![message(1), message(2), message(3)]);
        // Reading made room again.
        assert!(outbox.push(message(4)).is_ok());
        assert!(outbox.push(message(5)).is_ok());
        assert_eq!(outbox.push(message(6)), Err(message(6)));
        assert_eq!(outbox.reclaim(), vec![message(4), message(5)]);
        assert!(outbox.push(message(7)).is_ok());
    }

    #[test]
    fn offline_stores_are_never_refused_and_come_first() {
        let (outbox, receiver) = Outbox::new(1);
        outbox.push(message(1)).unwrap();
        let store = |n: i64| Outgoing::StoreOffline {
            to: Arc::from("bob"),
            payload: Payload::from_value(&n.into()),
        };
        for n in 0..3 {
            outbox.push_store(store(n));
        }
        assert_eq!(outbox.stores_waiting(), 3);
        // A replaced session's relays are taken back; its stores stay.
        assert_eq!(outbox.reclaim(), vec![message(1)]);
        outbox.push(message(2)).unwrap();
        let drained: Vec<_> = std::iter::from_fn(|| outbox.next(&receiver)).collect();
        assert_eq!(drained, vec![store(0), store(1), store(2), message(2)]);
        assert_eq!(outbox.stores_waiting(), 0);
    }

    #[test]
    fn user_list_slot_keeps_only_the_newest() {
        let (outbox, _receiver) = Outbox::new(1);
        outbox.set_user_list(Arc::from("old"));
        outbox.set_user_list(Arc::from("new"));
        assert_eq!(outbox.take_user_list().as_deref(), Some("new"));
        assert_eq!(outbox.take_user_list(), None);
    }

    #[test]
    fn first_close_request_wins_and_reclaim_empties() {
        let (outbox, receiver) = Outbox::new(4);
        outbox.push(message(1)).unwrap();
        outbox.request_close(CloseRequest::Replaced);
        outbox.request_close(CloseRequest::TooSlow);
        assert_eq!(outbox.close_requested(), Some(CloseRequest::Replaced));
        assert_eq!(outbox.reclaim(), vec![message(1)]);
        assert_eq!(outbox.next(&receiver), None);
    }
}
