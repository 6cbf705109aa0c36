//! Trellis genesis: the first state every node of a chain agrees on.
//!
//! - [`format`]: the [`Genesis`] document (JSON on disk), its validation and its hash.
//! - [`network`]: [`build`], which derives a whole dev/test network (genesis and
//!   every node's keys) deterministically from a seed, and [`dev_account`].
//!
//! [`contract_code`] gives the contract modules genesis can deploy.
//!
//! [`Genesis::dev`] (one validator) and [`Genesis::local`] (four validators) are
//! embedded in the crate. Both use **insecure, publicly derivable keys**: they
//! exist for development and tests and must never guard anything of value.

pub mod format;
pub mod network;

/// The code of a genesis contract this build ships, by name: the module
/// `contracts/build.sh` wrote to `genesis/contracts/<name>.wasm`.
pub fn contract_code(name: &str) -> Option<&'static [u8]> {
    match name {
        "counter" => Some(include_bytes!("../contracts/counter.wasm")),
        "receivables" => Some(include_bytes!("../contracts/receivables.wasm")),
        _ => None,
    }
}

pub use format::{
    Genesis, GenesisAccount, GenesisCall, GenesisContract, GenesisError, GenesisObserver,
    GenesisOrganisation, GenesisValidator,
};
pub use network::{
    DEV_CREDIT_CURRENCY, DEV_CREDIT_LIMIT, DEV_GENESIS_TIME_MS, NetworkSpec, NodeKeys, build,
    dev_account, dev_params,
};
