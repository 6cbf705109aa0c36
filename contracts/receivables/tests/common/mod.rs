//! A consortium on the kit's `TestHost`, with typed calls and queries.
//!
//! Calls run the contract's Rust code natively, or, with
//! `TRELLIS_CONTRACT_HOST=wasm` (or [`Chain::on_wasm`]), the module genesis
//! deploys (`genesis/contracts/receivables.wasm`) through wasmtime: the same
//! scenarios, on the bytes the chain runs.
#![allow(dead_code)]

use serde::{Serialize, de::DeserializeOwned};
use std::sync::OnceLock;
use trellis_contract::testing::{TestHost, WasmContract, regulator_reader};
use trellis_contract::{ContractError, Host, Role, codec, store};
use trellis_receivables::*;

pub const DAY: u64 = MS_PER_DAY;
/// 2023-11-14, so times look like real ones.
pub const T0: u64 = 1_700_000_000_000;
/// Minor units per currency unit (two decimals).
pub const UNIT: u128 = 100;

pub const ADMIN: &str = "consortium";
pub const CORE: &str = "core-motors";
pub const CORE2: &str = "core-steel";
pub const T1: &str = "tier1-parts";
pub const T2: &str = "tier2-castings";
pub const T3: &str = "tier3-bolts";
pub const BANK: &str = "first-bank";
pub const BANK2: &str = "second-bank";
pub const REGULATOR: &str = "regulator";
pub const OUTSIDER: &str = "not-a-member";

pub fn invoice(name: &str) -> [u8; 32] {
    *blake3::hash(name.as_bytes()).as_bytes()
}

pub struct Chain {
    pub host: TestHost,
    /// Set: calls and queries run the built module instead of the Rust code.
    pub wasm: Option<&'static WasmContract>,
}

/// The module genesis deploys, compiled once per test process.
pub fn built_module() -> &'static WasmContract {
    static MODULE: OnceLock<WasmContract> = OnceLock::new();
    MODULE.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../genesis/contracts/receivables.wasm"
        );
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        WasmContract::new(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

/// Whether `TRELLIS_CONTRACT_HOST=wasm` asks for the built module.
fn wasm_by_default() -> Option<&'static WasmContract> {
    (std::env::var("TRELLIS_CONTRACT_HOST").as_deref() == Ok("wasm")).then(built_module)
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// The members above, default params, time [`T0`], no credit limits.
    pub fn new() -> Self {
        let mut host = TestHost::new();
        host.add_member(ADMIN, &[Role::Admin])
            .add_member(CORE, &[Role::CoreEnterprise])
            .add_member(CORE2, &[Role::CoreEnterprise])
            .add_member(T1, &[Role::Supplier])
            .add_member(T2, &[Role::Supplier])
            .add_member(T3, &[Role::Supplier])
            .add_member(BANK, &[Role::Bank])
            .add_member(BANK2, &[Role::Bank])
            .add_member(REGULATOR, &[Role::Regulator])
            .set_block(1, T0);
        Chain {
            host,
            wasm: wasm_by_default(),
        }
    }

    /// [`Chain::new`], running the built module through wasmtime.
    pub fn on_wasm() -> Self {
        Chain {
            wasm: Some(built_module()),
            ..Self::new()
        }
    }

    pub fn now(&self) -> u64 {
        self.host.block().timestamp_ms
    }

    pub fn advance(&mut self, ms: u64) {
        self.host.advance(ms);
    }

    pub fn try_call<A: Serialize, R: Serialize + DeserializeOwned>(
        &mut self,
        org: &str,
        method: &str,
        args: &A,
    ) -> Result<R, ContractError> {
        self.host.act_as(org);
        let args = codec::encode(args);
        let out = match self.wasm {
            Some(module) => self.host.call_wasm(module, method, &args),
            None => self.host.call::<Receivables>(method, &args),
        }?;
        Ok(codec::decode(&out).expect("results decode"))
    }

    /// A call that must succeed; the invariants must hold after it.
    #[track_caller]
    pub fn call<A: Serialize, R: Serialize + DeserializeOwned>(
        &mut self,
        org: &str,
        method: &str,
        args: &A,
    ) -> R {
        let out = self
            .try_call(org, method, args)
            .unwrap_or_else(|e| panic!("{org} {method} failed: {e:?}"));
        self.check();
        out
    }

    /// A call that must fail with `code` and leave storage and events as they were.
    #[track_caller]
    pub fn refuse<A: Serialize>(&mut self, org: &str, method: &str, args: &A, code: &str) {
        let storage = self.host.storage().clone();
        let events = self.host.events().len();
        match self.try_call::<A, ()>(org, method, args).map(|_| ()) {
            Ok(()) => panic!("{org} {method} succeeded; expected {code}"),
            Err(e) => assert_eq!(e.code, code, "{org} {method}: {}", e.message),
        }
        assert!(
            self.host.storage() == &storage,
            "a refused call changed storage"
        );
        assert_eq!(
            self.host.events().len(),
            events,
            "a refused call emitted events"
        );
    }

    /// A query as the host's reader (a regulator unless [`Chain::query_as`]).
    fn try_query<A: Serialize, R: Serialize + DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, ContractError> {
        let args = codec::encode(args);
        let out = match self.wasm {
            Some(module) => self.host.query_wasm(module, method, &args),
            None => self.host.query::<Receivables>(method, &args),
        }?;
        Ok(codec::decode(&out).expect("query results decode"))
    }

    #[track_caller]
    pub fn query<A: Serialize, R: Serialize + DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> R {
        self.try_query(method, args)
            .unwrap_or_else(|e| panic!("{method}: {e:?}"))
    }

    /// A query run as `org` (the member whose request asked), not as a regulator.
    pub fn query_as<A: Serialize, R: Serialize + DeserializeOwned>(
        &mut self,
        org: &str,
        method: &str,
        args: &A,
    ) -> Result<R, ContractError> {
        self.host.read_as(org);
        let out = self.try_query(method, args);
        self.host.set_reader(regulator_reader());
        out
    }

    #[track_caller]
    pub fn check(&self) {
        if let Err(e) = self
            .host
            .read(|h| Ok(check_invariants(h)))
            .expect("the checker does not trap")
        {
            panic!("invariant violated: {e}");
        }
    }

    pub fn piece(&self, id: PieceId) -> PieceView {
        self.query("piece", &IdRef { id })
    }

    /// `issuer`'s outstanding in CNY, the currency these tests issue in.
    pub fn outstanding(&self, issuer: &str) -> u128 {
        self.query("outstanding", &cny(issuer))
    }

    /// Every stored record, for before/after comparisons.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.host
            .read(|h: &dyn Host| Ok(store::scan(h, b"")))
            .expect("scan")
    }

    // ---- shorthands for the usual moves ----

    /// Sets `issuer`'s credit limit in CNY.
    pub fn limit(&mut self, issuer: &str, limit: u128) {
        self.call::<_, ()>(
            ADMIN,
            "set_credit_limit",
            &SetCreditLimit {
                issuer: issuer.into(),
                currency: "CNY".into(),
                limit,
            },
        );
    }

    pub fn issue_args(&self, to: &str, amount: u128, inv: &str) -> Issue {
        Issue {
            to: to.into(),
            amount,
            currency: "CNY".into(),
            maturity_ms: self.now() + 180 * DAY,
            invoice_hash: invoice(inv),
            terms: "net 180, goods received".into(),
        }
    }

    pub fn issue(&mut self, to: &str, amount: u128, inv: &str) -> PieceId {
        let a = self.issue_args(to, amount, inv);
        self.call(CORE, "issue", &a)
    }

    /// Issued by [`CORE`] to `to` and accepted; sets a generous limit first.
    pub fn active(&mut self, to: &str, amount: u128, inv: &str) -> PieceId {
        let limit = self.outstanding(CORE) + amount;
        self.limit(CORE, limit.max(self.query("credit_limit", &cny(CORE))));
        let id = self.issue(to, amount, inv);
        self.call::<_, ()>(to, "accept", &PieceRef { piece: id });
        id
    }

    pub fn split(&mut self, org: &str, piece: PieceId, parts: &[(&str, u128)]) -> Vec<PieceId> {
        let parts = parts.iter().map(|(o, a)| ((*o).to_string(), *a)).collect();
        self.call(org, "split", &Split { piece, parts })
    }

    pub fn transfer(&mut self, org: &str, piece: PieceId, to: &str) {
        self.call::<_, ()>(
            org,
            "transfer",
            &Transfer {
                piece,
                to: to.into(),
            },
        );
    }

    pub fn rate_terms(&self, bps: u32, valid_ms: u64) -> Terms {
        Terms {
            price: None,
            annual_rate_bps: Some(bps),
            expires_ms: self.now() + valid_ms,
        }
    }

    pub fn price_terms(&self, price: u128, valid_ms: u64) -> Terms {
        Terms {
            price: Some(price),
            annual_rate_bps: None,
            expires_ms: self.now() + valid_ms,
        }
    }
}

/// `issuer`'s credit figures in CNY.
pub fn cny(issuer: &str) -> CreditRef {
    CreditRef {
        issuer: issuer.into(),
        currency: "CNY".into(),
    }
}
