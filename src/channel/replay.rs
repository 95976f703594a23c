//! The replay window of one connection: the tags of its last
//! [`REPLAY_WINDOW`] verified inbound frames, so that a frame sent again is
//! refused (README.md, "Input rules and channel security").
//!
//! Every inbound frame looks a tag up, adds it and drops the oldest, so the
//! window is a small open-addressing set of its own: linear probing over a
//! table at most half full, removal by shifting the probe run back (no
//! tombstones, so no rehash of the whole table every few thousand frames),
//! and a multiplicative hash keyed per connection. A general-purpose hash
//! set spent ~7% of the server's routing time here.

use std::collections::VecDeque;

/// How many tags a connection remembers.
pub const REPLAY_WINDOW: usize = 4096;

/// The first 8 bytes of a verified tag (HMAC-SHA256). A replay repeats the
/// whole tag, so its prefix too; two honest frames share a prefix with odds
/// of [`REPLAY_WINDOW`] in 2^64. Eight bytes keep a busy sender's window in
/// ~100 KB.
type TagPrefix = u64;

/// Marks an empty slot; a prefix of 0 is kept in [`SeenTags::zero`].
const EMPTY: TagPrefix = 0;

/// The smallest table; a connection that sends a few frames stays this small.
const MIN_SLOTS: usize = 16;

/// The last [`REPLAY_WINDOW`] tag prefixes, oldest first, and a set of them.
#[derive(Debug)]
pub struct SeenTags {
    order: VecDeque<TagPrefix>,
    /// Linear-probing table, a power of two long, at most half full.
    slots: Vec<TagPrefix>,
    /// Odd multiplier of the slot hash, random per window: a client cannot
    /// aim its tags at one probe run without knowing it.
    multiplier: u64,
    /// Whether the prefix 0 (which marks empty slots) is in the window.
    zero: bool,
}

impl Default for SeenTags {
    fn default() -> Self {
        SeenTags {
            order: VecDeque::new(),
            slots: Vec::new(),
            multiplier: rand::random::<u64>() | 1,
            zero: false,
        }
    }
}

impl SeenTags {
    /// Records `tag`; false if it is already in the window. A tag shorter
    /// than 8 bytes (never one verified by HMAC-SHA256) is padded with zeros.
    pub fn insert(&mut self, tag: &[u8]) -> bool {
        let prefix = prefix_of(tag);
        if self.contains(prefix) {
            return false;
        }
        if self.order.len() >= REPLAY_WINDOW {
            if let Some(oldest) = self.order.pop_front() {
                self.remove(oldest);
            }
        }
        self.add(prefix);
        self.order.push_back(prefix);
        true
    }

    /// Asks the CPU to fetch the table slots that inserting `tag` will read
    /// (its own, and the oldest tag's when the window is full), so that
    /// their memory latency overlaps the frame's HMAC check. A busy
    /// sender's table is bigger than the caches share it gets: these two
    /// reads were most of the window's cost.
    pub fn prefetch(&self, tag: &[u8]) {
        if self.slots.is_empty() {
            return;
        }
        prefetch_slot(&self.slots[self.home(prefix_of(tag))]);
        if self.order.len() >= REPLAY_WINDOW {
            if let Some(&oldest) = self.order.front() {
                prefetch_slot(&self.slots[self.home(oldest)]);
            }
        }
    }

    fn contains(&self, prefix: TagPrefix) -> bool {
        if prefix == EMPTY {
            return self.zero;
        }
        self.find(prefix).is_ok()
    }

    /// `Ok(slot)` holding `prefix`, or `Err(slot)`: the empty slot that ends
    /// its probe run (`Err(0)` for a table not allocated yet).
    fn find(&self, prefix: TagPrefix) -> Result<usize, usize> {
        if self.slots.is_empty() {
            return Err(0);
        }
        let mask = self.slots.len() - 1;
        let mut slot = self.home(prefix);
        // At most half full, so an empty slot ends every run; the bound
        // only makes that plain.
        for _ in 0..self.slots.len() {
            match self.slots[slot] {
                EMPTY => return Err(slot),
                held if held == prefix => return Ok(slot),
                _ => slot = (slot + 1) & mask,
            }
        }
        Err(slot)
    }

    /// Adds a prefix known not to be in the table.
    fn add(&mut self, prefix: TagPrefix) {
        if prefix == EMPTY {
            self.zero = true;
            return;
        }
        if (self.order.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        if let Err(slot) = self.find(prefix) {
            self.slots[slot] = prefix;
        }
    }

    /// Removes a prefix, moving back the entries of its probe run that
    /// would no longer be found past the hole.
    fn remove(&mut self, prefix: TagPrefix) {
        if prefix == EMPTY {
            self.zero = false;
            return;
        }
        let Ok(mut hole) = self.find(prefix) else {
            return;
        };
        let mask = self.slots.len() - 1;
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let moved = self.slots[next];
            if moved == EMPTY {
                break;
            }
            // `moved` may fill the hole when the hole lies on its way from
            // its home slot to where it sits now.
            let from_home = next.wrapping_sub(self.home(moved)) & mask;
            let from_hole = next.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.slots[hole] = moved;
                hole = next;
            }
        }
        self.slots[hole] = EMPTY;
    }

    /// Doubles the table and puts every prefix of the window back.
    fn grow(&mut self) {
        let length = (self.slots.len() * 2).max(MIN_SLOTS);
        self.slots = vec![EMPTY; length];
        for index in 0..self.order.len() {
            let prefix = self.order[index];
            if prefix != EMPTY {
                if let Err(slot) = self.find(prefix) {
                    self.slots[slot] = prefix;
                }
            }
        }
    }

    /// The slot where a prefix's probe run starts.
    fn home(&self, prefix: TagPrefix) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (prefix.wrapping_mul(self.multiplier) >> (64 - bits)) as usize
    }
}

/// A tag's first 8 bytes, padded with zeros when it is shorter.
fn prefix_of(tag: &[u8]) -> TagPrefix {
    let mut bytes = [0u8; 8];
    let length = tag.len().min(bytes.len());
    bytes[..length].copy_from_slice(&tag[..length]);
    TagPrefix::from_le_bytes(bytes)
}

#[cfg(target_arch = "x86_64")]
fn prefetch_slot(slot: &TagPrefix) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is only a hint to the cache: it never faults and
    // changes nothing the program can read; the address is a live slot.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((slot as *const TagPrefix).cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_slot(_slot: &TagPrefix) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn tag(n: u64) -> [u8; 8] {
        n.to_le_bytes()
    }

    #[test]
    fn the_window_is_bounded() {
        let mut seen = SeenTags::default();
        for n in 0..(REPLAY_WINDOW + 10) as u64 {
            assert!(seen.insert(&tag(n)));
        }
        assert!(
            !seen.insert(&tag(REPLAY_WINDOW as u64 + 9)),
            "newest remembered"
        );
        assert_eq!(seen.order.len(), REPLAY_WINDOW);
        assert_eq!(seen.slots.len(), 2 * REPLAY_WINDOW, "at most half full");
        assert!(seen.insert(&tag(0)), "oldest forgotten");
        assert!(!seen.insert(&tag(20)), "recent remembered");
    }

    #[test]
    fn short_tags_are_padded_and_a_zero_prefix_is_remembered() {
        let mut seen = SeenTags::default();
        assert!(seen.insert(&[]));
        assert!(!seen.insert(&[0, 0, 0]), "both pad to the zero prefix");
        assert!(seen.insert(&[1]));
        assert!(
            !seen.insert(&[1, 0, 0, 0, 0, 0, 0, 0, 99]),
            "only 8 bytes count"
        );
        for n in 1..=REPLAY_WINDOW as u64 {
            seen.insert(&tag(n << 8));
        }
        assert!(seen.insert(&[]), "the zero prefix left the window");
    }

    /// Against a plain model, with tags from a small range so that probe
    /// runs are long and removals shift entries across the table's end.
    #[test]
    fn behaves_as_a_set_of_the_last_tags() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next_random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for range in [3 * REPLAY_WINDOW as u64, 1 << 20, u64::MAX] {
            let mut seen = SeenTags {
                multiplier: next_random() | 1,
                ..SeenTags::default()
            };
            let mut model: VecDeque<u64> = VecDeque::new();
            for _ in 0..40_000 {
                let prefix = next_random() % range;
                let fresh = !model.contains(&prefix);
                assert_eq!(seen.insert(&tag(prefix)), fresh, "{prefix}");
                if fresh {
                    if model.len() == REPLAY_WINDOW {
                        model.pop_front();
                    }
                    model.push_back(prefix);
                }
            }
            let held: HashSet<u64> = seen.slots.iter().copied().filter(|&p| p != EMPTY).collect();
            let expected: HashSet<u64> = model.iter().copied().filter(|&p| p != EMPTY).collect();
            assert_eq!(held, expected);
            assert_eq!(seen.order.len(), model.len());
        }
    }

    /// Every prefix hashing to the same slot: removal still finds the rest.
    #[test]
    fn one_long_probe_run_wraps_and_shrinks_correctly() {
        let mut seen = SeenTags {
            multiplier: 1,
            ..SeenTags::default()
        };
        // With multiplier 1 the home slot is the prefix's top bits: all
        // of these start at the table's last slot and wrap around.
        let prefixes: Vec<u64> = (1..=40).map(|n| u64::MAX - n).collect();
        for &prefix in &prefixes {
            assert!(seen.insert(&tag(prefix)));
        }
        for &prefix in &prefixes[..20] {
            seen.remove(prefix);
            assert!(!seen.contains(prefix));
        }
        for &prefix in &prefixes[20..] {
            assert!(seen.contains(prefix), "{prefix} lost by a removal");
        }
    }
}
