//! LOBSTER sample order flow (NASDAQ, 2012-06-21) as a correctness oracle for the book.
//!
//! Two halves, kept apart so that a benchmark can time the replay alone:
//! - **Parsing**: [`read_messages`] / [`read_snapshots`] read a message or orderbook file
//!   (plain `.csv` or `.csv.xz`) into compact structs, prices already in book ticks.
//! - **Replay**: [`replay`] drives a [`Book`] with the harness described in
//!   `shared/data/lobster/README.md` and compares the book with the published orderbook
//!   after every message.
//!
//! The harness, in short:
//! 1. Seed the book from orderbook row 0 with one anonymous order per level.
//! 2. Message i ≥ 1: type 1 → `rest` (it must not cross); type 2 → remove Size shares
//!    (`reduce`, or `cancel` when nothing is left); type 3 → remove Size shares (the
//!    order's remaining quantity); type 4 → an IOC `take` on the opposite side at Price
//!    for Size (every fill must be at Price, and the whole Size must fill); type 5/6 → no
//!    change; type 7 → halt/resume (no change to the resting book).
//! 3. Compare the book with row i inside row i−1's window (the prices row i−1 shows, or the
//!    whole side when it showed fewer than N levels). Levels of row i from beyond that
//!    window are injected as anonymous orders; book levels outside row i's window are
//!    dropped (the feed stops describing them).
//!
//! Ids that the file never submitted (entered before 09:30 or while out of view) act on
//! the anonymous volume at their price. When NASDAQ executed an order that was not at the
//! head of its queue, the book fills a different order than the message names: the
//! harness then records that the order it filled is owed volume by the order the message
//! named ("re-targeting"), and later messages naming the filled order draw the missing
//! shares from the named one.
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use amdahl_book::{Book, BookConfig, BookError, Level, Match, OrderHandle, RestingOrder, Taker};
use amdahl_types::{AccountId, OrderId, Price, Qty, Side};
use rustc_hash::{FxHashMap, FxHashSet};

/// LOBSTER prices are dollars × 10000; the tick is $0.01.
pub const PRICE_PER_TICK: i64 = 100;
/// Anonymous orders (seeded and injected volume) get ids from here up; LOBSTER ids are far
/// below.
pub const ANON_ID_BASE: u64 = 1 << 48;
/// The aggressors of type-4 executions get ids from here up.
pub const TAKER_ID_BASE: u64 = 1 << 56;
/// The aggressors' account. Every resting order's account is odd (see [`maker_account`]),
/// so a taker never meets its own account and the self-trade policy never triggers.
pub const TAKER_ACCOUNT: AccountId = AccountId(0);

/// The account of a resting order: spread over many accounts, never [`TAKER_ACCOUNT`].
pub fn maker_account(id: u64) -> AccountId {
    AccountId((id as u32) | 1)
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// The shared LOBSTER directory: `$AMDAHL_LOBSTER_DIR`, else `shared/data/lobster` beside
/// the repository (the repository's parent holds `shared/`). Never copied into the repo.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AMDAHL_LOBSTER_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lobster")
}

/// A file of the shared LOBSTER directory; panics with a clear message when it is missing
/// (a missing oracle must fail the test, never skip it).
pub fn data_file(relative: &str) -> PathBuf {
    let dir = data_dir();
    let path = dir.join(relative);
    assert!(
        path.is_file(),
        "LOBSTER data file missing: {} (expected the shared data directory at {}; it lives \
         beside the repository as shared/data/lobster, or set AMDAHL_LOBSTER_DIR)",
        path.display(),
        dir.display()
    );
    path
}

/// The AAPL level-10 first-999-rows fixture: (message file, orderbook file).
pub fn aapl_first999() -> (PathBuf, PathBuf) {
    (
        data_file("aapl_level10_first999/AAPL_2012-06-21_34200000_57600000_message_10.csv"),
        data_file("aapl_level10_first999/AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"),
    )
}

/// The GOOG level-10 full day: (message file, orderbook file).
pub fn goog_level10() -> (PathBuf, PathBuf) {
    (
        data_file("GOOG_2012-06-21_34200000_57600000_message_10.csv.xz"),
        data_file("GOOG_2012-06-21_34200000_57600000_orderbook_10.csv.xz"),
    )
}

/// The AMZN level-5 full day: (message file, orderbook file).
pub fn amzn_level5() -> (PathBuf, PathBuf) {
    (
        data_file("AMZN_2012-06-21_34200000_57600000_message_5.csv.xz"),
        data_file("AMZN_2012-06-21_34200000_57600000_orderbook_5.csv.xz"),
    )
}

/// The whole content of a file, decompressed when its name ends in `.xz`.
pub fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "xz") {
        xz2::read::XzDecoder::new(BufReader::new(file)).read_to_end(&mut bytes)?;
    } else {
        BufReader::new(file).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// Reads and parses a message file (plain or `.xz`).
pub fn read_messages(path: &Path) -> io::Result<Vec<Message>> {
    parse_messages(&read_bytes(path)?).map_err(|e| bad_data(path, e))
}

/// Reads and parses an orderbook file (plain or `.xz`).
pub fn read_snapshots(path: &Path) -> io::Result<Snapshots> {
    parse_snapshots(&read_bytes(path)?).map_err(|e| bad_data(path, e))
}

/// Reads a (message file, orderbook file) pair and checks that they have one row per
/// message.
pub fn read_pair(
    (messages, orderbook): &(PathBuf, PathBuf),
) -> io::Result<(Vec<Message>, Snapshots)> {
    let m = read_messages(messages)?;
    let s = read_snapshots(orderbook)?;
    if m.len() != s.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} messages but {} orderbook rows", m.len(), s.len()),
        ));
    }
    Ok((m, s))
}

fn bad_data(path: &Path, e: ParseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// One message-file row. `price` is in book ticks for types 1–4 and raw (dollars × 10000,
/// or −1/0/1 for a halt) for types 5–7. `side` is the side of the **resting** order the
/// message is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Message {
    /// Nanoseconds after midnight.
    pub time_ns: u64,
    pub kind: u8,
    pub id: u64,
    pub size: i64,
    pub price: i64,
    pub side: Side,
}

/// One level slot of an orderbook row, prices in ticks. An empty slot has size 0 (and
/// price 0).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SnapLevel {
    pub ask_price: i64,
    pub ask_size: i64,
    pub bid_price: i64,
    pub bid_size: i64,
}

impl SnapLevel {
    pub fn get(&self, side: Side) -> Option<(i64, i64)> {
        let (p, s) = match side {
            Side::Buy => (self.bid_price, self.bid_size),
            Side::Sell => (self.ask_price, self.ask_size),
        };
        (s != 0).then_some((p, s))
    }
}

/// An orderbook file: `levels` slots per row, row i being the book after message i.
#[derive(Clone, Debug, Default)]
pub struct Snapshots {
    pub levels: usize,
    pub slots: Vec<SnapLevel>,
}

impl Snapshots {
    pub fn len(&self) -> usize {
        self.slots.len().checked_div(self.levels).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn row(&self, i: usize) -> &[SnapLevel] {
        &self.slots[i * self.levels..(i + 1) * self.levels]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for ParseError {}

/// Splits a CSV line into fields without allocating.
struct Fields<'a> {
    rest: &'a [u8],
    line: usize,
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Result<&'a [u8], ParseError> {
        if self.rest.is_empty() {
            return Err(self.err("too few fields"));
        }
        let end = self.rest.iter().position(|&b| b == b',').unwrap_or(self.rest.len());
        let field = &self.rest[..end];
        self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
        Ok(field)
    }
    fn int(&mut self) -> Result<i64, ParseError> {
        let f = self.next_field()?;
        parse_int(f)
            .ok_or_else(|| self.err(&format!("not an integer: {:?}", String::from_utf8_lossy(f))))
    }
    fn err(&self, what: &str) -> ParseError {
        ParseError { line: self.line, what: what.to_string() }
    }
    fn finish(&self) -> Result<(), ParseError> {
        if self.rest.is_empty() { Ok(()) } else { Err(self.err("too many fields")) }
    }
}

fn parse_int(f: &[u8]) -> Option<i64> {
    let (neg, digits) = match f.first()? {
        b'-' => (true, &f[1..]),
        _ => (false, f),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// "34200.004241176" → nanoseconds. Digits beyond the ninth are dropped: a few rows carry
/// float-formatting noise such as "43002.632812672004".
fn parse_time_ns(f: &[u8]) -> Option<u64> {
    let dot = f.iter().position(|&b| b == b'.').unwrap_or(f.len());
    let secs = u64::try_from(parse_int(&f[..dot])?).ok()?;
    let frac = f.get(dot + 1..).unwrap_or(&[]);
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut ns = 0u64;
    for i in 0..9 {
        ns = ns * 10 + frac.get(i).map_or(0, |&b| u64::from(b - b'0'));
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

fn to_ticks(raw: i64, line: usize) -> Result<i64, ParseError> {
    if raw % PRICE_PER_TICK != 0 {
        return Err(ParseError {
            line,
            what: format!("price {raw} is not a multiple of the $0.01 tick"),
        });
    }
    Ok(raw / PRICE_PER_TICK)
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty())
}

/// Parses a message file's content.
pub fn parse_messages(bytes: &[u8]) -> Result<Vec<Message>, ParseError> {
    let mut out = Vec::with_capacity(bytes.len() / 40);
    for (line, text) in lines(bytes) {
        let mut f = Fields { rest: text, line };
        let t = f.next_field()?;
        let time_ns = parse_time_ns(t).ok_or_else(|| f.err("bad time"))?;
        let kind = f.int()?;
        let id = f.int()?;
        let size = f.int()?;
        let raw_price = f.int()?;
        let dir = f.int()?;
        f.finish()?;
        let kind = u8::try_from(kind)
            .ok()
            .filter(|k| (1..=7).contains(k))
            .ok_or_else(|| f.err("bad type"))?;
        let id = u64::try_from(id).map_err(|_| f.err("negative order id"))?;
        let side = match dir {
            1 => Side::Buy,
            -1 => Side::Sell,
            _ => return Err(f.err("direction is neither 1 nor -1")),
        };
        // Hidden executions (type 5) can trade at the midpoint, off the tick grid; they do
        // not touch the visible book, so only types 1–4 must be (and are) on the grid.
        let price = if kind <= 4 { to_ticks(raw_price, line)? } else { raw_price };
        if kind != 7 && size < 0 {
            return Err(f.err("negative size"));
        }
        out.push(Message { time_ns, kind, id, size, price, side });
    }
    Ok(out)
}

/// Parses an orderbook file's content; the number of levels is taken from the first row.
pub fn parse_snapshots(bytes: &[u8]) -> Result<Snapshots, ParseError> {
    let mut snaps = Snapshots::default();
    for (line, text) in lines(bytes) {
        let fields = text.iter().filter(|&&b| b == b',').count() + 1;
        if snaps.levels == 0 {
            if fields % 4 != 0 {
                return Err(ParseError {
                    line,
                    what: format!("{fields} fields is not 4 per level"),
                });
            }
            snaps.levels = fields / 4;
            snaps.slots.reserve(bytes.len() / (fields * 6) * snaps.levels);
        } else if fields != snaps.levels * 4 {
            return Err(ParseError {
                line,
                what: format!("{fields} fields, expected {}", snaps.levels * 4),
            });
        }
        let mut f = Fields { rest: text, line };
        for _ in 0..snaps.levels {
            let (ap, asz, bp, bsz) = (f.int()?, f.int()?, f.int()?, f.int()?);
            let ask = if asz == 0 { (0, 0) } else { (to_ticks(ap, line)?, asz) };
            let bid = if bsz == 0 { (0, 0) } else { (to_ticks(bp, line)?, bsz) };
            if ask.1 < 0 || bid.1 < 0 {
                return Err(f.err("negative size"));
            }
            snaps.slots.push(SnapLevel {
                ask_price: ask.0,
                ask_size: ask.1,
                bid_price: bid.0,
                bid_size: bid.1,
            });
        }
        f.finish()?;
    }
    Ok(snaps)
}

/// A book configuration large enough for a file: prices up to twice the highest one seen.
pub fn book_config(messages: &[Message], snaps: &Snapshots) -> BookConfig {
    let msg_max = messages.iter().filter(|m| m.kind <= 4).map(|m| m.price).max().unwrap_or(0);
    let snap_max = snaps.slots.iter().map(|l| l.ask_price.max(l.bid_price)).max().unwrap_or(0);
    BookConfig { max_orders: 1 << 16, max_price: Price(msg_max.max(snap_max).max(1) * 2) }
}

// ---------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------

/// A row where the book differed from the published orderbook (inside the window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Orderbook row (= index of the message just applied).
    pub row: usize,
    pub side: Side,
    pub message: Message,
    /// (price in ticks, shares), best first: the published levels inside the window.
    pub expected: Vec<(i64, i64)>,
    /// The book's levels inside the window.
    pub got: Vec<(i64, i64)>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "row {} ({:?} side) after {:?}: expected {:?}, got {:?}",
            self.row, self.side, self.message, self.expected, self.got
        )
    }
}

/// What a replay found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Messages applied (all rows after row 0).
    pub messages: usize,
    pub rows_compared: usize,
    pub rows_matched: usize,
    /// Type-4 executions replayed.
    pub executions: usize,
    /// Fills whose maker differed from the order the message named (re-targeted).
    pub retargeted_fills: usize,
    /// Executions with at least one such fill.
    pub retargeted_executions: usize,
    /// Type 2/3/4 messages naming an id the file never submitted.
    pub unknown_id_messages: usize,
    /// Levels entering from beyond the window, injected as anonymous orders.
    pub levels_injected: usize,
    /// Levels leaving the window, dropped from the book.
    pub levels_dropped: usize,
    /// Removals that neither the named order, its re-target chain nor the anonymous
    /// volume could supply, taken from the newest order of the level instead.
    pub unresolved_removals: usize,
    /// Type-7 messages.
    pub halts: usize,
    pub first_mismatch: Option<Mismatch>,
    /// Harness assertions that failed other than a row comparison (a type 1 that would
    /// cross, a fill at a price other than the message's, a short execution, …).
    pub problems: usize,
    pub first_problem: Option<String>,
}

impl Report {
    /// Every row compared matched and no assertion failed.
    pub fn is_clean(&self) -> bool {
        self.rows_matched == self.rows_compared
            && self.first_mismatch.is_none()
            && self.problems == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rows matched {}/{}; executions {}, re-targeted fills {} (in {} executions); \
             unknown-id messages {}; levels injected {}, dropped {}; unresolved removals {}; \
             halts {}; problems {}",
            self.rows_matched,
            self.rows_compared,
            self.executions,
            self.retargeted_fills,
            self.retargeted_executions,
            self.unknown_id_messages,
            self.levels_injected,
            self.levels_dropped,
            self.unresolved_removals,
            self.halts,
            self.problems
        )?;
        if let Some(m) = &self.first_mismatch {
            write!(f, "; first mismatch: {m}")?;
        }
        if let Some(p) = &self.first_problem {
            write!(f, "; first problem: {p}")?;
        }
        Ok(())
    }
}

/// Who owns a quantity of resting volume, in the feed's terms.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Name {
    /// An order the file submitted (type 1).
    Id(u64),
    /// The anonymous volume of one level: seeded, injected, and every id the file never
    /// submitted.
    Anon(Side, i64),
}

/// Re-target chains are short; this bounds the recursion should they ever form a cycle.
const MAX_CHAIN: u32 = 8;
/// Capacity of the depth buffers (the book holds about `levels` levels per side).
const DEPTH_BUF: usize = 512;

struct Harness<'b> {
    book: &'b mut Book,
    levels: usize,
    /// Every order we rested that is still in the book.
    live: FxHashMap<u64, OrderHandle>,
    /// Ids submitted by a type-1 message.
    submitted: FxHashSet<u64>,
    /// Anonymous order ids per level, oldest first (pruned lazily).
    anon: FxHashMap<(Side, i64), Vec<u64>>,
    /// `owes[a]` = [(b, q)]: the book holds q shares of a's feed volume in b's order.
    owes: FxHashMap<Name, Vec<(Name, i64)>>,
    next_anon: u64,
    next_taker: u64,
    fills: Vec<Match>,
    scratch: Vec<(u64, OrderHandle, i64)>,
    bids: Vec<Level>,
    asks: Vec<Level>,
    row: usize,
    report: Report,
}

/// Replays `messages` through `book` (which must be empty) and compares it with `snaps`
/// after every message, as described in the module documentation. `levels` is the file's
/// depth (10 for `_orderbook_10`); it must match the orderbook rows.
pub fn replay(book: &mut Book, messages: &[Message], snaps: &Snapshots, levels: usize) -> Report {
    assert!(book.is_empty(), "replay needs an empty book");
    assert_eq!(levels, snaps.levels, "orderbook rows have {} levels", snaps.levels);
    assert_eq!(messages.len(), snaps.len(), "one orderbook row per message");
    let mut h = Harness {
        book,
        levels,
        live: FxHashMap::default(),
        submitted: FxHashSet::default(),
        anon: FxHashMap::default(),
        owes: FxHashMap::default(),
        next_anon: ANON_ID_BASE,
        next_taker: TAKER_ID_BASE,
        fills: Vec::with_capacity(64),
        scratch: Vec::with_capacity(256),
        bids: vec![Level::default(); DEPTH_BUF],
        asks: vec![Level::default(); DEPTH_BUF],
        row: 0,
        report: Report::default(),
    };
    if messages.is_empty() {
        return h.report;
    }
    h.seed(snaps.row(0));
    for (i, msg) in messages.iter().enumerate().skip(1) {
        h.row = i;
        h.report.messages += 1;
        h.apply(msg);
        h.compare(msg, snaps.row(i - 1), snaps.row(i));
    }
    h.report
}

/// The worst price row shows on `side` when it shows all `levels` levels (then the window
/// is the prices at least that good); `None` when it shows fewer (the window is the whole
/// side).
fn window(row: &[SnapLevel], side: Side, levels: usize) -> Option<i64> {
    let shown = row.iter().filter(|l| l.get(side).is_some()).count();
    if shown == levels { row[levels - 1].get(side).map(|(p, _)| p) } else { None }
}

fn in_window(side: Side, price: i64, worst: Option<i64>) -> bool {
    match (worst, side) {
        (None, _) => true,
        (Some(w), Side::Buy) => price >= w,
        (Some(w), Side::Sell) => price <= w,
    }
}

impl Harness<'_> {
    fn problem(&mut self, what: String) {
        self.report.problems += 1;
        if self.report.first_problem.is_none() {
            self.report.first_problem = Some(format!("row {}: {what}", self.row));
        }
    }

    fn seed(&mut self, row: &[SnapLevel]) {
        for side in [Side::Buy, Side::Sell] {
            for l in row {
                if let Some((p, s)) = l.get(side) {
                    self.inject(side, p, s);
                }
            }
        }
    }

    /// Rests a new anonymous order at the tail of a level.
    fn inject(&mut self, side: Side, price: i64, qty: i64) {
        let id = self.next_anon;
        self.next_anon += 1;
        let order = RestingOrder {
            id: OrderId(id),
            account: maker_account(id),
            side,
            price: Price(price),
            leaves: Qty(qty),
            display: None,
        };
        match self.book.rest(order) {
            Ok(h) => {
                self.live.insert(id, h);
                self.anon.entry((side, price)).or_default().push(id);
            }
            Err(e) => {
                self.problem(format!("injecting anonymous {side:?} {qty}@{price} failed: {e:?}"))
            }
        }
    }

    fn name(&mut self, m: &Message) -> Name {
        if self.submitted.contains(&m.id) {
            let id = Name::Id(m.id);
            if self.live.contains_key(&m.id) || self.owes.contains_key(&id) {
                id
            } else {
                // Submitted, but its level left the window and came back as anonymous
                // volume: the order now lives in that volume.
                Name::Anon(m.side, m.price)
            }
        } else {
            self.report.unknown_id_messages += 1;
            Name::Anon(m.side, m.price)
        }
    }

    fn apply(&mut self, m: &Message) {
        match m.kind {
            1 => self.add(m),
            2 | 3 => {
                let name = self.name(m);
                self.remove(name, m.side, m.price, m.size);
            }
            4 => self.execute(m),
            5 | 6 => {}
            7 => self.report.halts += 1,
            k => self.problem(format!("unknown message type {k}")),
        }
    }

    fn add(&mut self, m: &Message) {
        if self.live.contains_key(&m.id) || m.id >= ANON_ID_BASE {
            self.problem(format!("type 1 reuses order id {}", m.id));
            return;
        }
        let order = RestingOrder {
            id: OrderId(m.id),
            account: maker_account(m.id),
            side: m.side,
            price: Price(m.price),
            leaves: Qty(m.size),
            display: None,
        };
        match self.book.rest(order) {
            Ok(h) => {
                self.live.insert(m.id, h);
                self.submitted.insert(m.id);
            }
            Err(BookError::WouldCross) => {
                self.problem(format!("type 1 would cross (it must rest without a fill): {m:?}"))
            }
            Err(e) => self.problem(format!("type 1 rejected with {e:?}: {m:?}")),
        }
    }

    fn execute(&mut self, m: &Message) {
        self.report.executions += 1;
        let name = self.name(m);
        let taker = Taker {
            id: OrderId(self.next_taker),
            account: TAKER_ACCOUNT,
            side: m.side.opposite(),
            limit: Some(Price(m.price)),
            qty: Qty(m.size),
        };
        self.next_taker += 1;
        let mut fills = std::mem::take(&mut self.fills);
        fills.clear();
        let left = self.book.take(taker, |x| fills.push(x));
        let mut filled = 0;
        let mut retargeted = false;
        for x in &fills {
            match *x {
                Match::Fill { maker, price, qty, maker_leaves, .. } => {
                    filled += qty.0;
                    if price.0 != m.price {
                        self.problem(format!(
                            "execution filled {} at {} instead of {}: {m:?}",
                            qty.0, price.0, m.price
                        ));
                    }
                    if maker_leaves.is_zero() {
                        self.live.remove(&maker.0);
                    }
                    let maker_name = if maker.0 >= ANON_ID_BASE {
                        Name::Anon(m.side, price.0)
                    } else {
                        Name::Id(maker.0)
                    };
                    if maker_name != name {
                        self.report.retargeted_fills += 1;
                        retargeted = true;
                        self.add_owes(maker_name, name, qty.0);
                    }
                }
                Match::SelfTradeCancel { maker, .. } => {
                    self.problem(format!(
                        "self-trade cancel of {} (accounts are distinct)",
                        maker.0
                    ));
                    self.live.remove(&maker.0);
                }
            }
        }
        self.fills = fills;
        if retargeted {
            self.report.retargeted_executions += 1;
        }
        if filled != m.size || left.0 != m.size - filled {
            self.problem(format!(
                "execution filled {filled} of {} (take returned {} left): {m:?}",
                m.size, left.0
            ));
        }
    }

    /// The book filled `debtor`'s order where the feed executed `holder`'s: `holder`'s
    /// order now holds `qty` shares that belong to `debtor`.
    fn add_owes(&mut self, debtor: Name, holder: Name, mut qty: i64) {
        // Net against a debt the other way round.
        if let Some(list) = self.owes.get_mut(&holder) {
            for e in list.iter_mut().filter(|e| e.0 == debtor) {
                let n = e.1.min(qty);
                e.1 -= n;
                qty -= n;
            }
            list.retain(|e| e.1 > 0);
            if list.is_empty() {
                self.owes.remove(&holder);
            }
        }
        if qty > 0 {
            let list = self.owes.entry(debtor).or_default();
            match list.iter_mut().find(|e| e.0 == holder) {
                Some(e) => e.1 += qty,
                None => list.push((holder, qty)),
            }
        }
    }

    /// Takes up to `want` shares out of one resting order; returns how many.
    fn take_handle(&mut self, id: u64, h: OrderHandle, want: i64) -> i64 {
        let leaves = self.book.get(h).leaves.0;
        let t = want.min(leaves);
        if t == leaves {
            self.book.cancel(h);
            self.live.remove(&id);
        } else if t > 0 {
            self.book.reduce(h, Qty(leaves - t));
        }
        t
    }

    /// Takes up to `want` shares from the orders the name itself holds.
    fn take_own(&mut self, name: Name, side: Side, price: i64, want: i64) -> i64 {
        match name {
            Name::Id(id) => {
                let Some(&h) = self.live.get(&id) else { return 0 };
                let o = *self.book.get(h);
                if o.side != side || o.price.0 != price || o.id.0 != id {
                    self.problem(format!(
                        "order {id} is {:?} {}@{} in the book, but the message says \
                         {side:?} @{price}",
                        o.side, o.leaves.0, o.price.0
                    ));
                    return 0;
                }
                self.take_handle(id, h, want)
            }
            Name::Anon(s, p) => {
                let Some(mut ids) = self.anon.remove(&(s, p)) else { return 0 };
                ids.retain(|id| self.live.contains_key(id));
                let mut taken = 0;
                for &id in &ids {
                    if taken == want {
                        break;
                    }
                    let h = self.live[&id];
                    taken += self.take_handle(id, h, want - taken);
                }
                ids.retain(|id| self.live.contains_key(id));
                if !ids.is_empty() {
                    self.anon.insert((s, p), ids);
                }
                taken
            }
        }
    }

    /// Takes up to `want` shares from the name's orders, then from the orders holding
    /// volume it is owed.
    fn take_chain(&mut self, name: Name, side: Side, price: i64, want: i64, depth: u32) -> i64 {
        let mut taken = self.take_own(name, side, price, want);
        if taken < want
            && depth < MAX_CHAIN
            && let Some(mut list) = self.owes.remove(&name)
        {
            for e in list.iter_mut() {
                if taken == want {
                    break;
                }
                let t = self.take_chain(e.0, side, price, e.1.min(want - taken), depth + 1);
                e.1 -= t;
                taken += t;
            }
            list.retain(|e| e.1 > 0);
            if !list.is_empty() {
                self.owes.insert(name, list);
            }
        }
        taken
    }

    /// Takes up to `want` shares from the level's newest orders, whoever they are.
    fn take_any(&mut self, side: Side, price: i64, want: i64) -> i64 {
        let mut orders = std::mem::take(&mut self.scratch);
        orders.clear();
        self.book.for_each_order(side, |h, o, _| {
            if o.price.0 == price {
                orders.push((o.id.0, h, o.leaves.0));
            }
        });
        let mut taken = 0;
        for &(id, h, _) in orders.iter().rev() {
            if taken == want {
                break;
            }
            taken += self.take_handle(id, h, want - taken);
        }
        self.scratch = orders;
        taken
    }

    /// Removes `qty` shares of `name`'s volume (type 2 and type 3).
    fn remove(&mut self, name: Name, side: Side, price: i64, qty: i64) {
        let mut taken = self.take_chain(name, side, price, qty, 0);
        if taken < qty && matches!(name, Name::Id(_)) {
            // The order left our book with its level (dropped out of view); the volume
            // came back as anonymous.
            taken += self.take_chain(Name::Anon(side, price), side, price, qty - taken, 0);
        }
        if taken < qty {
            self.report.unresolved_removals += 1;
            taken += self.take_any(side, price, qty - taken);
        }
        if taken < qty {
            self.problem(format!(
                "removing {qty} of {name:?} at {side:?} {price}: only {taken} resting"
            ));
        }
    }

    /// Sets a level's volume to `target` (anonymous volume and the newest orders go first
    /// when lowering; an anonymous order joins the tail when raising).
    fn set_level(&mut self, side: Side, price: i64, current: i64, target: i64) {
        if target > current {
            self.inject(side, price, target - current);
        } else if target < current {
            let want = current - target;
            let mut taken = self.take_own(Name::Anon(side, price), side, price, want);
            taken += self.take_any(side, price, want - taken);
            if taken < want {
                self.problem(format!(
                    "lowering {side:?} level {price} by {want}: only {taken} resting"
                ));
            }
        }
    }

    fn compare(&mut self, m: &Message, prev: &[SnapLevel], cur: &[SnapLevel]) {
        let mut bids = std::mem::take(&mut self.bids);
        let mut asks = std::mem::take(&mut self.asks);
        let nb = self.book.depth(Side::Buy, &mut bids);
        let na = self.book.depth(Side::Sell, &mut asks);
        let mut matched = true;
        let mut changes: [Vec<(i64, i64, i64)>; 2] = [Vec::new(), Vec::new()];
        for (side, book_levels) in [(Side::Buy, &bids[..nb]), (Side::Sell, &asks[..na])] {
            let prev_w = window(prev, side, self.levels);
            let cur_w = window(cur, side, self.levels);
            let expected =
                cur.iter().filter_map(|l| l.get(side)).filter(|&(p, _)| in_window(side, p, prev_w));
            let got = book_levels
                .iter()
                .map(|l| (l.price.0, l.visible.0))
                .filter(|&(p, _)| in_window(side, p, prev_w) && in_window(side, p, cur_w));
            if !expected.clone().eq(got.clone()) {
                matched = false;
                if self.report.first_mismatch.is_none() {
                    self.report.first_mismatch = Some(Mismatch {
                        row: self.row,
                        side,
                        message: *m,
                        expected: expected.collect(),
                        got: got.collect(),
                    });
                }
            }
            // Make the side equal to row `cur`: drop what left the window, inject what
            // entered it (and, after a mismatch, resynchronise so later rows still count).
            let volume_at =
                |p: i64| book_levels.iter().find(|l| l.price.0 == p).map_or(0, |l| l.visible.0);
            let list = &mut changes[side as usize];
            for l in book_levels {
                let (p, v) = (l.price.0, l.visible.0);
                let target = cur
                    .iter()
                    .filter_map(|s| s.get(side))
                    .find(|&(q, _)| q == p)
                    .map_or(0, |(_, s)| s);
                if target < v {
                    if !in_window(side, p, cur_w) {
                        self.report.levels_dropped += 1;
                    }
                    list.push((p, v, target));
                }
            }
            for (p, s) in cur.iter().filter_map(|l| l.get(side)) {
                let v = volume_at(p);
                if s > v {
                    if !in_window(side, p, prev_w) {
                        self.report.levels_injected += 1;
                    }
                    list.push((p, v, s));
                }
            }
        }
        self.bids = bids;
        self.asks = asks;
        // Lower before raising, so that an injected level never meets a stale one.
        for pass_lower in [true, false] {
            for (i, side) in [Side::Buy, Side::Sell].into_iter().enumerate() {
                for &(p, v, t) in &changes[i] {
                    if (t < v) == pass_lower {
                        self.set_level(side, p, v, t);
                    }
                }
            }
        }
        self.report.rows_compared += 1;
        if matched {
            self.report.rows_matched += 1;
        }
    }
}
