//! A counting global allocator: wraps the real one (mimalloc in the `amdahl` binary, the
//! system allocator in tests) and counts allocations, globally and per thread.
//!
//! It is how we prove the engine's steady state allocates nothing (STYLE.md habit 4): a
//! test or `amdahl bench` reads the counters before and after a window of commands. The
//! cost is one relaxed atomic add and one thread-local add per allocation; the hot path
//! makes no allocations, so it pays nothing.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: amdahl_alloc::Counting<std::alloc::System> =
//!     amdahl_alloc::Counting::new(std::alloc::System);
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations (including reallocations) made by every thread.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Allocations made by this thread. `const`-initialised with no destructor, so reading
    /// it from inside the allocator never allocates or registers a destructor.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// A `GlobalAlloc` that forwards to `A` and counts.
pub struct Counting<A> {
    inner: A,
}

impl<A> Counting<A> {
    pub const fn new(inner: A) -> Counting<A> {
        Counting { inner }
    }
}

/// Allocations made by every thread since the process started (if a `Counting` allocator
/// is the global allocator; otherwise always 0).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations made by the calling thread since it started.
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

#[inline]
fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: during thread teardown the slot may be gone; the global count still has it.
    let _ = THREAD_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged, so the
// caller's compliance with `GlobalAlloc`'s contract is exactly `inner`'s precondition, and
// what `inner` returns is returned as is. The counters never touch the memory.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; our caller upholds `alloc`'s contract.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; our caller upholds `alloc_zeroed`'s contract.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged: `ptr` came from `inner` (through us) with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged: `ptr` came from `inner` with `layout`; our caller
        // upholds `realloc`'s contract for `new_size`.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}
