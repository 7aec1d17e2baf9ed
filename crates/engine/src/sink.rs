use amdahl_types::Event;
use core::hash::Hash;
use xxhash_rust::xxh3::Xxh3;

/// Where the engine's events go. A `Vec<Event>` (pre-reserved) collects them; a
/// `HashSink` folds them into the output-stream hash without storing them.
pub trait EventSink {
    fn emit(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn emit(&mut self, event: Event) {
        self.push(event);
    }
}

/// Hashes the event stream (XXH3-128 over each event's derived `Hash` encoding). Two
/// topologies agree on the stream iff they agree on this hash, up to collisions.
pub struct HashSink {
    hasher: Xxh3,
    pub count: u64,
}

impl Default for HashSink {
    fn default() -> Self {
        HashSink { hasher: Xxh3::new(), count: 0 }
    }
}

impl HashSink {
    pub fn digest(&self) -> u128 {
        self.hasher.digest128()
    }
}

impl EventSink for HashSink {
    #[inline]
    fn emit(&mut self, event: Event) {
        event.hash(&mut self.hasher);
        self.count += 1;
    }
}

/// Both: keep the events and hash them.
impl<A: EventSink, B: EventSink> EventSink for (A, B) {
    #[inline]
    fn emit(&mut self, event: Event) {
        self.0.emit(event);
        self.1.emit(event);
    }
}
