//! What lets the markets' matchers work on the engine's state at once, on several threads,
//! without moving it: disjoint mutable views of one table (`Rows`), and lending borrowed
//! work to threads that outlive the borrow (`scope`, `Job`). Both need `unsafe` that
//! Rust's borrows cannot express; it is kept here, small, with its argument written down,
//! so the engine itself stays `forbid(unsafe_code)`.
//!
//! # Rows
//!
//! The engine keeps its per-(account, market) state (positions, order-margin aggregates,
//! margin caches, ...) account-major — row `account × markets + market` — because the
//! account-level passes (cross sums, the audit, stage R) walk an account's markets together.
//! A matcher touches only its own market's rows: those at one residue modulo the number of
//! markets. `Rows` is a view of exactly those, so the markets' matchers can hold their
//! views at once, on different threads, each writing its own rows of the same `Vec` — as
//! `chunks_mut` does for contiguous pieces, here for a stride.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use amdahl_types::AccountId;

/// The rows `offset + k × stride` of a table, indexed by account (`k`).
pub struct Rows<'a, T> {
    /// The table's row `offset`.
    first: *mut T,
    /// Rows of the table from `offset` on: account `a` is in range while `a × stride` is
    /// below it.
    len: usize,
    stride: usize,
    _rows: PhantomData<&'a mut [T]>,
}

// SAFETY: a `Rows` is a `&mut` to its rows and nothing else (see `split`), so it may go to
// another thread as a `&mut [T]` may.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for Rows<'_, T> {}
// SAFETY: as for `Send`: shared, it gives out `&T` of its own rows only.
#[allow(unsafe_code)]
unsafe impl<T: Sync> Sync for Rows<'_, T> {}

impl<'a, T> Rows<'a, T> {
    /// The rows at `offset` of a table of `stride` rows per account.
    pub fn of(table: &'a mut [T], stride: usize, offset: usize) -> Rows<'a, T> {
        // Not needed for soundness (`row` bounds every index), only to catch a misuse.
        debug_assert!(offset < stride, "row {offset} of {stride}");
        Rows::at(table, stride, offset)
    }

    /// Every offset's rows, in offset order: views that share no row, so each may go to
    /// its own thread.
    pub fn split(table: &'a mut [T], stride: usize) -> impl Iterator<Item = Rows<'a, T>> {
        assert!(stride > 0 && table.len().is_multiple_of(stride), "a table of whole accounts");
        let (first, len) = (table.as_mut_ptr(), table.len());
        (0..stride).map(move |offset| Rows {
            // In bounds (`offset < stride <= len`), or one past the end of an empty table.
            first: first.wrapping_add(offset),
            len: len.saturating_sub(offset),
            stride,
            _rows: PhantomData,
        })
    }

    fn at(table: &'a mut [T], stride: usize, offset: usize) -> Rows<'a, T> {
        let len = table.len();
        Rows {
            first: table.as_mut_ptr().wrapping_add(offset),
            len: len.saturating_sub(offset),
            stride,
            _rows: PhantomData,
        }
    }

    /// Where account `a`'s row is, from `first`; a row outside the table panics, as an
    /// index out of bounds does.
    #[inline]
    fn row(&self, a: AccountId) -> usize {
        let i = a.0 as usize * self.stride;
        assert!(i < self.len, "account {} is outside the table", a.0);
        i
    }
}

impl<T> Index<AccountId> for Rows<'_, T> {
    type Output = T;

    #[inline]
    fn index(&self, a: AccountId) -> &T {
        // SAFETY: `row` keeps the index inside the table, at this view's offset, which no
        // other view of the same borrow reaches (`split` hands out distinct offsets).
        #[allow(unsafe_code)]
        unsafe {
            &*self.first.add(self.row(a))
        }
    }
}

impl<T> IndexMut<AccountId> for Rows<'_, T> {
    #[inline]
    fn index_mut(&mut self, a: AccountId) -> &mut T {
        // SAFETY: as `index`; `&mut self` makes the reference unique among this view's.
        #[allow(unsafe_code)]
        unsafe {
            &mut *self.first.add(self.row(a))
        }
    }
}

/// Work that a `Job` runs on whichever thread it is sent to.
pub trait Work: Send {
    fn work(&mut self);
}

/// A lending scope (see `scope`): hands out `Job`s that borrow from outside it.
pub struct Scope<'scope, 'env: 'scope> {
    /// Jobs handed out and not yet dropped.
    out: AtomicUsize,
    // Invariant in both, as `std::thread::Scope` is: a borrow for `'scope` must come from
    // outside the closure `scope` runs.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// Run `f` with a scope that lends work out as `Job`s, and return only once every job it
/// lent has been dropped (run or not), calling `idle` while one is out. The persistent
/// threads of a pipeline can so run work that borrows the engine, with no thread spawned
/// and nothing allocated: `std::thread::scope` for threads that already exist.
///
/// If `f` panics, `scope` still waits for its jobs before the panic goes on. A job that is
/// never dropped (leaked, or stuck in the queue of a thread that died) makes it wait
/// forever: a hang, never a dangling borrow; `idle` may check for a dead thread and abort.
///
/// Work must be borrowed from outside the scope's closure, which ends before the scope
/// waits for its jobs:
///
/// ```
/// use amdahl_disjoint::{Work, scope};
/// struct Bump<'a>(&'a mut u64);
/// impl Work for Bump<'_> {
///     fn work(&mut self) {
///         *self.0 += 1;
///     }
/// }
/// let mut n = 0;
/// let mut bump = Bump(&mut n);
/// scope(|| {}, |s| s.job(&mut bump).run());
/// assert_eq!(n, 1);
/// ```
///
/// ```compile_fail
/// use amdahl_disjoint::{Work, scope};
/// struct Bump<'a>(&'a mut u64);
/// impl Work for Bump<'_> {
///     fn work(&mut self) {
///         *self.0 += 1;
///     }
/// }
/// let mut out = Vec::new();
/// scope(|| {}, |s| {
///     let mut n = 0; // dies when the closure returns, before the scope's jobs are back
///     let mut bump = Bump(&mut n);
///     out.push(s.job(&mut bump));
/// });
/// ```
pub fn scope<'env, R>(
    mut idle: impl FnMut(),
    f: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
) -> R {
    let scope = Scope { out: AtomicUsize::new(0), _scope: PhantomData, _env: PhantomData };
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    // Acquire: pairs with each job's release as it is dropped, so what the job wrote
    // through its borrow is visible here before the borrow ends.
    while scope.out.load(Ordering::Acquire) != 0 {
        idle();
    }
    match result {
        Ok(r) => r,
        Err(panic) => resume_unwind(panic),
    }
}

impl<'scope> Scope<'scope, '_> {
    /// A job that runs `work` (borrowed for the scope, so nothing else touches it until
    /// `scope` returns) on whichever thread it is sent to.
    pub fn job<W: Work + 'scope>(&'scope self, work: &'scope mut W) -> Job {
        self.out.fetch_add(1, Ordering::Relaxed);
        let work: *mut (dyn Work + 'scope) = work;
        // SAFETY: only the lifetime is erased (same pointer, same vtable). The pointer is
        // used while the job lives, and `scope` does not return (ending `'scope`) until
        // the job has been dropped.
        #[allow(unsafe_code)]
        let work: *mut (dyn Work + 'static) = unsafe { std::mem::transmute(work) };
        Job { work, out: &self.out }
    }
}

/// Work lent out of a `scope`: `Send` and `'static`, so it travels through a queue to a
/// persistent thread; dropping it (after `run`, or instead) tells the scope it is back.
pub struct Job {
    work: *mut (dyn Work + 'static),
    out: *const AtomicUsize,
}

// SAFETY: a `Job` is a `&mut W` for a `W: Send` (`Work: Send`), which may go to another
// thread; the scope's counter is an atomic.
#[allow(unsafe_code)]
unsafe impl Send for Job {}

impl Job {
    /// Run the work, on this thread; then the job is dropped, and the scope told.
    pub fn run(self) {
        // SAFETY: the work is alive and borrowed by nothing else until this job is dropped
        // (`Scope::job`), and a job runs at most once (`run` takes it).
        #[allow(unsafe_code)]
        unsafe {
            (*self.work).work();
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the scope's counter lives until every job is dropped (`scope` waits for
        // it to reach zero). Release: what the work wrote happens before the scope goes
        // on. Nothing is touched after the decrement.
        #[allow(unsafe_code)]
        unsafe {
            (*self.out).fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_reach_their_own_rows_only() {
        // 3 accounts × 4 markets, row = account × 4 + market.
        let mut table: Vec<u32> = (0..12).collect();
        let mut views: Vec<Rows<'_, u32>> = Rows::split(&mut table, 4).collect();
        assert_eq!(views[2][AccountId(1)], 6);
        views[3][AccountId(2)] += 100;
        views[0][AccountId(0)] += 100;
        drop(views);
        assert_eq!(table, [100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 111]);
        let mut one = Rows::of(&mut table, 4, 1);
        one[AccountId(2)] = 0;
        assert_eq!(table[9], 0);
    }

    struct Add<'a>(&'a mut u64, u64);

    impl Work for Add<'_> {
        fn work(&mut self) {
            *self.0 += self.1;
        }
    }

    #[test]
    fn lent_jobs_run_on_other_threads_and_come_back_before_scope_returns() {
        let (to, from) = std::sync::mpsc::channel::<Job>();
        let worker = std::thread::spawn(move || {
            for job in from {
                job.run();
            }
        });
        let (mut a, mut b, mut c) = (1u64, 2u64, 3u64);
        let (mut x, mut y, mut z) = (Add(&mut a, 10), Add(&mut b, 20), Add(&mut c, 30));
        let idle = std::thread::yield_now;
        scope(idle, |s| {
            to.send(s.job(&mut x)).unwrap();
            to.send(s.job(&mut y)).unwrap();
            drop(s.job(&mut z)); // dropped unrun: still counted back
        });
        assert_eq!((a, b, c), (11, 22, 3));
        drop(to);
        worker.join().unwrap();
    }

    #[test]
    fn a_panic_in_the_scope_waits_for_the_jobs_out() {
        let (to, from) = std::sync::mpsc::channel::<Job>();
        let worker = std::thread::spawn(move || {
            for job in from {
                std::thread::sleep(std::time::Duration::from_millis(20));
                job.run();
            }
        });
        let mut a = 0u64;
        let mut add = Add(&mut a, 5);
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            scope(std::thread::yield_now, |s| {
                to.send(s.job(&mut add)).unwrap();
                panic!("the lender fails");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(a, 5, "the job ran before the panic went on");
        drop(to);
        worker.join().unwrap();
    }

    #[test]
    #[should_panic(expected = "account 3 is outside the table")]
    fn an_account_past_the_table_panics() {
        let mut table = vec![0u8; 12];
        let rows = Rows::of(&mut table, 4, 3);
        let _ = rows[AccountId(3)];
    }
}
