//! Balances, double-entry transfers and the audit invariant (DESIGN.md §4).
//!
//! Every movement of money is a transfer between two entries, so sums never drift:
//! wallets (one per account per settlement currency), the fee account, the insurance fund,
//! and the *position-cost* entry — the sum of all open-position costs, whose other side is
//! always a wallet (realised PnL) or another position (a trade moves `+v` to the buyer's
//! cost and `−v` to the seller's).
//!
//! The invariant, per currency, exact to the unit:
//!
//! ```text
//! Σ wallets + fee account + insurance fund − Σ position costs = Σ deposits − Σ withdrawals
//! ```
//!
//! Architecture invariants:
//! - No balance is ever negative: a transfer that would make one negative is refused
//!   (`LedgerError::Insufficient`) and changes nothing.
//! - The ledger keeps its sums incrementally (the cheap per-group audit) and can recompute
//!   them from scratch (the full audit); the two must agree.
//! - Storage is dense and allocated once, for `accounts` accounts.
#![forbid(unsafe_code)]

use amdahl_types::{AccountId, Currency, Money};

/// A place money can be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Entry {
    Wallet(AccountId),
    /// Fees collected (taker fees in, maker rebates out).
    Fees,
    /// The insurance fund: absorbs losses past the bankruptcy price.
    Insurance,
    /// Funding passes through here: payers in, receivers out, the rounding residue to the
    /// insurance fund; it is empty between commands.
    Clearing,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LedgerError {
    /// The debited entry does not hold enough; nothing moved.
    Insufficient {
        entry: Entry,
        currency: Currency,
        balance: Money,
        amount: Money,
    },
    /// A transfer or deposit amount must be positive.
    NotPositive,
    UnknownAccount,
}

/// Per-currency totals kept incrementally.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Totals {
    pub wallets: i128,
    pub fees: Money,
    pub insurance: Money,
    pub clearing: Money,
    /// Σ of all open-position costs (BitMEX sign).
    pub position_cost: i128,
    pub deposits: i128,
    pub withdrawals: i128,
}

impl Totals {
    /// Left side minus right side of the audit invariant; zero when the books balance.
    pub fn discrepancy(&self) -> i128 {
        self.wallets + self.fees as i128 + self.insurance as i128 + self.clearing as i128
            - self.position_cost
            - (self.deposits - self.withdrawals)
    }
}

/// The result of a failed audit: which currency, by how much, and what was compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AuditFailure {
    pub currency: Currency,
    pub discrepancy: i128,
    pub incremental: Totals,
    /// Present when the failure came from the full recomputation.
    pub recomputed: Option<Totals>,
}

pub struct Ledger {
    wallets: [Vec<Money>; Currency::COUNT],
    totals: [Totals; Currency::COUNT],
}

impl Ledger {
    pub fn new(accounts: u32) -> Ledger {
        let n = accounts as usize;
        Ledger { wallets: [vec![0; n], vec![0; n]], totals: [Totals::default(); Currency::COUNT] }
    }

    pub fn accounts(&self) -> u32 {
        self.wallets[0].len() as u32
    }

    pub fn wallet(&self, account: AccountId, currency: Currency) -> Money {
        self.wallets[currency.index()][account.0 as usize]
    }

    /// Every account's wallet in `currency`, by account id: for passes over many accounts
    /// (the remargin pass reads one per cross position).
    pub fn wallets(&self, currency: Currency) -> &[Money] {
        &self.wallets[currency.index()]
    }

    pub fn balance(&self, entry: Entry, currency: Currency) -> Money {
        match entry {
            Entry::Wallet(a) => self.wallet(a, currency),
            Entry::Fees => self.totals[currency.index()].fees,
            Entry::Insurance => self.totals[currency.index()].insurance,
            Entry::Clearing => self.totals[currency.index()].clearing,
        }
    }

    pub fn totals(&self, currency: Currency) -> Totals {
        self.totals[currency.index()]
    }

    fn check_account(&self, account: AccountId) -> Result<(), LedgerError> {
        if (account.0 as usize) < self.wallets[0].len() {
            Ok(())
        } else {
            Err(LedgerError::UnknownAccount)
        }
    }

    /// Money enters the system (the other side is the deposits total).
    pub fn deposit(
        &mut self,
        account: AccountId,
        currency: Currency,
        amount: Money,
    ) -> Result<(), LedgerError> {
        self.check_account(account)?;
        if amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        let c = currency.index();
        let w = &mut self.wallets[c][account.0 as usize];
        *w = w.checked_add(amount).expect("wallet overflow: deposits are bounded at the edge");
        self.totals[c].wallets += amount as i128;
        self.totals[c].deposits += amount as i128;
        Ok(())
    }

    /// Money leaves the system. The engine checks availability (margin) first; the ledger
    /// only guarantees the wallet never goes negative.
    pub fn withdraw(
        &mut self,
        account: AccountId,
        currency: Currency,
        amount: Money,
    ) -> Result<(), LedgerError> {
        self.check_account(account)?;
        if amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        let c = currency.index();
        let balance = self.wallets[c][account.0 as usize];
        if balance < amount {
            let entry = Entry::Wallet(account);
            return Err(LedgerError::Insufficient { entry, currency, balance, amount });
        }
        self.wallets[c][account.0 as usize] = balance - amount;
        self.totals[c].wallets -= amount as i128;
        self.totals[c].withdrawals += amount as i128;
        Ok(())
    }

    /// Move `amount` (> 0) from one entry to another; refused if `from` holds less.
    pub fn transfer(
        &mut self,
        currency: Currency,
        from: Entry,
        to: Entry,
        amount: Money,
    ) -> Result<(), LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        let balance = self.balance(from, currency);
        if balance < amount {
            return Err(LedgerError::Insufficient { entry: from, currency, balance, amount });
        }
        if let Entry::Wallet(a) = to {
            self.check_account(a)?;
        }
        self.add(currency, from, -amount);
        self.add(currency, to, amount);
        Ok(())
    }

    fn add(&mut self, currency: Currency, entry: Entry, amount: Money) {
        let c = currency.index();
        match entry {
            Entry::Wallet(a) => {
                self.wallets[c][a.0 as usize] += amount;
                self.totals[c].wallets += amount as i128;
            }
            Entry::Fees => self.totals[c].fees += amount,
            Entry::Insurance => self.totals[c].insurance += amount,
            Entry::Clearing => self.totals[c].clearing += amount,
        }
    }

    /// A trade moved `delta` into one position's cost and `−delta` into another's: the
    /// position-cost entry is unchanged in total, but each side is posted so the books
    /// record both legs.
    pub fn post_trade_cost(&mut self, currency: Currency, buyer_delta: Money, seller_delta: Money) {
        debug_assert_eq!(buyer_delta + seller_delta, 0, "a trade moves cost between two positions");
        let t = &mut self.totals[currency.index()];
        t.position_cost += buyer_delta as i128 + seller_delta as i128;
    }

    /// Realise PnL: the residue `r` of a closed part leaves the position's cost and `−r`
    /// enters the wallet (DESIGN.md §4). `amount` is the wallet credit `−r` (a loss is
    /// negative); the position-cost total moves by the same `amount`, so
    /// `Σ wallets − Σ costs` is unchanged. A loss larger than the wallet is covered by the
    /// insurance fund — the loss past the bankruptcy price that BitMEX's fund absorbs — and
    /// the covered part is returned. Refused, changing nothing, if the fund cannot cover it either.
    pub fn realise(
        &mut self,
        account: AccountId,
        currency: Currency,
        amount: Money,
    ) -> Result<Money, LedgerError> {
        self.check_account(account)?;
        let c = currency.index();
        let wallet = self.wallets[c][account.0 as usize];
        let shortfall = (-(wallet as i128 + amount as i128)).max(0) as Money;
        if shortfall > 0 {
            let insurance = self.totals[c].insurance;
            if insurance < shortfall {
                let entry = Entry::Insurance;
                return Err(LedgerError::Insufficient {
                    entry,
                    currency,
                    balance: insurance,
                    amount: shortfall,
                });
            }
            self.add(currency, Entry::Insurance, -shortfall);
            self.add(currency, Entry::Wallet(account), shortfall);
        }
        self.add(currency, Entry::Wallet(account), amount);
        self.totals[c].position_cost += amount as i128;
        Ok(shortfall)
    }

    /// Realise the liquidation engine's PnL: the insurance fund owns its positions, so a
    /// gain (a fill better than the bankruptcy price) enters the fund and a loss (worse)
    /// leaves it. Refused, changing nothing, if the fund cannot pay the loss.
    pub fn realise_insurance(
        &mut self,
        currency: Currency,
        amount: Money,
    ) -> Result<(), LedgerError> {
        let c = currency.index();
        let insurance = self.totals[c].insurance;
        if amount < 0 && insurance < -amount {
            let entry = Entry::Insurance;
            return Err(LedgerError::Insufficient {
                entry,
                currency,
                balance: insurance,
                amount: -amount,
            });
        }
        self.add(currency, Entry::Insurance, amount);
        self.totals[c].position_cost += amount as i128;
        Ok(())
    }

    /// Before realising `amount` into a wallet: if the loss reaches past the wallet and past
    /// the insurance fund, move what the fee account can spare into the fund so the loss is
    /// covered rather than halting trading. Returns what moved (0 usually).
    pub fn top_up_for(&mut self, account: AccountId, currency: Currency, amount: Money) -> Money {
        let c = currency.index();
        let wallet = self.wallets[c][account.0 as usize] as i128;
        let shortfall = (-(wallet + amount as i128)).max(0);
        let deficit = shortfall - self.totals[c].insurance as i128;
        if deficit <= 0 {
            return 0;
        }
        let moved = (deficit as Money).min(self.totals[c].fees);
        if moved > 0 {
            self.add(currency, Entry::Fees, -moved);
            self.add(currency, Entry::Insurance, moved);
        }
        moved
    }

    /// Seed the insurance fund (money enters the system, recorded as a deposit).
    pub fn fund_insurance(&mut self, currency: Currency, amount: Money) -> Result<(), LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        let c = currency.index();
        self.totals[c].insurance += amount;
        self.totals[c].deposits += amount as i128;
        Ok(())
    }

    /// The cheap per-group audit over the incremental totals.
    // A failure is cold and halts the engine; carrying the evidence by value keeps the
    // failure path free of allocation.
    #[allow(clippy::result_large_err)]
    pub fn audit(&self) -> Result<(), AuditFailure> {
        for currency in Currency::ALL {
            let t = self.totals(currency);
            let discrepancy = t.discrepancy();
            if discrepancy != 0 {
                return Err(AuditFailure {
                    currency,
                    discrepancy,
                    incremental: t,
                    recomputed: None,
                });
            }
        }
        Ok(())
    }

    /// The full audit: re-sum every wallet from scratch, take the position costs re-summed
    /// by the caller from every position, and check both against the incremental totals and
    /// the invariant. Also checks no wallet is negative.
    #[allow(clippy::result_large_err)]
    pub fn audit_full(&self, position_cost: [i128; Currency::COUNT]) -> Result<(), AuditFailure> {
        for currency in Currency::ALL {
            let c = currency.index();
            let incremental = self.totals[c];
            let mut recomputed = incremental;
            recomputed.wallets = self.wallets[c].iter().map(|&w| w as i128).sum();
            recomputed.position_cost = position_cost[c];
            let negative = self.wallets[c].iter().any(|&w| w < 0)
                || incremental.fees < 0
                || incremental.insurance < 0
                || incremental.clearing < 0;
            let discrepancy = recomputed.discrepancy();
            if discrepancy != 0 || recomputed != incremental || negative {
                let recomputed = Some(recomputed);
                return Err(AuditFailure { currency, discrepancy, incremental, recomputed });
            }
        }
        Ok(())
    }

    /// Change one wallet WITHOUT its other side, to prove in tests that the audit halts the
    /// engine on a broken invariant. Nothing in the engine calls it.
    #[doc(hidden)]
    pub fn corrupt_for_test(&mut self, account: AccountId, currency: Currency, amount: Money) {
        self.wallets[currency.index()][account.0 as usize] += amount;
    }

    /// Feed every balance, in a canonical order, to a state hasher.
    pub fn hash_into(&self, h: &mut impl core::hash::Hasher) {
        for c in 0..Currency::COUNT {
            for &w in &self.wallets[c] {
                h.write_i64(w);
            }
            let t = &self.totals[c];
            h.write_i64(t.fees);
            h.write_i64(t.insurance);
            h.write_i64(t.clearing);
            h.write_i128(t.position_cost);
            h.write_i128(t.deposits);
            h.write_i128(t.withdrawals);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AccountId = AccountId(0);
    const B: AccountId = AccountId(1);

    #[test]
    fn deposit_transfer_withdraw_balance() {
        let mut l = Ledger::new(2);
        l.deposit(A, Currency::XBt, 1_000).unwrap();
        l.transfer(Currency::XBt, Entry::Wallet(A), Entry::Fees, 75).unwrap();
        l.transfer(Currency::XBt, Entry::Fees, Entry::Wallet(B), 25).unwrap();
        l.withdraw(A, Currency::XBt, 925).unwrap();
        assert_eq!(l.wallet(A, Currency::XBt), 0);
        assert_eq!(l.wallet(B, Currency::XBt), 25);
        assert_eq!(l.balance(Entry::Fees, Currency::XBt), 50);
        l.audit().unwrap();
        l.audit_full([0, 0]).unwrap();
    }

    #[test]
    fn refused_transfers_change_nothing() {
        let mut l = Ledger::new(2);
        l.deposit(A, Currency::XBt, 100).unwrap();
        let before = l.totals(Currency::XBt);
        let err = l.transfer(Currency::XBt, Entry::Wallet(A), Entry::Wallet(B), 101).unwrap_err();
        assert_eq!(
            err,
            LedgerError::Insufficient {
                entry: Entry::Wallet(A),
                currency: Currency::XBt,
                balance: 100,
                amount: 101
            }
        );
        assert_eq!(l.withdraw(A, Currency::XBt, 101).unwrap_err(), err);
        assert_eq!(l.deposit(A, Currency::XBt, 0), Err(LedgerError::NotPositive));
        assert_eq!(l.deposit(AccountId(2), Currency::XBt, 5), Err(LedgerError::UnknownAccount));
        assert_eq!(l.totals(Currency::XBt), before);
        assert_eq!(l.wallet(A, Currency::XBt), 100);
        // The other currency is untouched by all of it.
        assert_eq!(l.totals(Currency::USDt), Totals::default());
    }

    #[test]
    fn realise_moves_cost_into_wallet_and_insurance_covers_shortfall() {
        let mut l = Ledger::new(2);
        l.deposit(A, Currency::XBt, 100).unwrap();
        l.fund_insurance(Currency::XBt, 50).unwrap();
        // A trade: buyer A's cost +1000, seller B's −1000.
        l.post_trade_cost(Currency::XBt, 1000, -1000);
        // A realises a loss of 130 with 100 in the wallet: 30 comes from the fund.
        assert_eq!(l.realise(A, Currency::XBt, -130).unwrap(), 30);
        assert_eq!(l.wallet(A, Currency::XBt), 0);
        assert_eq!(l.balance(Entry::Insurance, Currency::XBt), 20);
        // B realises +130 (the counterparty's profit).
        assert_eq!(l.realise(B, Currency::XBt, 130).unwrap(), 0);
        l.audit().unwrap();
        // Σ cost: 0 − 130 + 130 = 0 (each realisation moved cost by its wallet credit).
        l.audit_full([0, 0]).unwrap();
        // A loss the fund cannot cover is refused and changes nothing.
        let before = l.totals(Currency::XBt);
        assert!(l.realise(A, Currency::XBt, -21).is_err());
        assert_eq!(l.totals(Currency::XBt), before);
    }

    #[test]
    fn full_audit_catches_a_one_sided_posting() {
        let mut l = Ledger::new(2);
        l.deposit(A, Currency::XBt, 100).unwrap();
        // The caller's positions say Σ cost is 7, but the ledger recorded 0.
        let err = l.audit_full([7, 0]).unwrap_err();
        assert_eq!(err.currency, Currency::XBt);
        assert_eq!(err.discrepancy, -7);
        // A corrupted incremental total is caught by the cheap audit too.
        l.totals[0].fees += 1;
        assert_eq!(l.audit().unwrap_err().discrepancy, 1);
    }
}
