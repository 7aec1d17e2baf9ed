use amdahl_types::Event;
use core::hash::{Hash, Hasher};
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
///
/// The derived encoding is many small writes; they are gathered in a buffer and fed to XXH3
/// in blocks (XXH3's result does not depend on how its input is split).
pub struct HashSink {
    hasher: Gathered,
    pub count: u64,
}

const GATHER: usize = 512;

struct Gathered {
    buf: [u8; GATHER],
    len: usize,
    inner: Xxh3,
}

impl Hasher for Gathered {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > GATHER {
            self.inner.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > GATHER {
                self.inner.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(&self) -> u64 {
        let mut h = self.inner.clone();
        h.update(&self.buf[..self.len]);
        h.digest()
    }
}

impl Default for HashSink {
    fn default() -> Self {
        HashSink { hasher: Gathered { buf: [0; GATHER], len: 0, inner: Xxh3::new() }, count: 0 }
    }
}

impl HashSink {
    pub fn digest(&self) -> u128 {
        let mut h = self.hasher.inner.clone();
        h.update(&self.hasher.buf[..self.hasher.len]);
        h.digest128()
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

#[cfg(test)]
mod tests {
    use super::*;
    use amdahl_types::{MarketId, Price, Seq};

    #[test]
    fn gathering_does_not_change_the_hash() {
        // The same events hashed straight into XXH3 and through the gathering buffer (with
        // enough of them to flush several times) give the same digest.
        let mut direct = Xxh3::new();
        let mut sink = HashSink::default();
        for i in 0..1000 {
            let e = Event::MarkChanged { seq: Seq(i), market: MarketId(1), price: Price(i as i64) };
            e.hash(&mut direct);
            sink.emit(e);
        }
        assert_eq!(sink.digest(), direct.digest128());
        assert_eq!(sink.count, 1000);
    }
}
