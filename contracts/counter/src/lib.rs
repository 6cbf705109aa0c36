//! A shared counter: the smallest useful Trellis contract.
//!
//! `increment(by: u64) -> u64` adds to the count (members only) and emits an
//! `incremented` event; the query `get() -> u64` reads it. It exists to show
//! the kit's shape and to give `contracts/build.sh` something to build and pin.

#![no_std]

extern crate alloc;

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use trellis_contract::{
    Contract, ContractError, ContractEvent, ContractResult, Host, args, ret, store,
};

const COUNT: &[u8] = b"count";

pub struct Counter;

impl Contract for Counter {
    fn call(host: &mut dyn Host, method: &str, input: &[u8]) -> ContractResult<Vec<u8>> {
        match method {
            "increment" => {
                let by: u64 = args(input)?;
                if by == 0 {
                    return Err(ContractError::new(
                        "zero_increment",
                        "increment by at least 1",
                    ));
                }
                let caller = host.caller();
                if caller.roles.is_empty() {
                    return Err(ContractError::new(
                        "unauthorised",
                        "only members may increment",
                    ));
                }
                let count = store::get::<u64>(host, COUNT)
                    .unwrap_or(0)
                    .checked_add(by)
                    .ok_or_else(|| {
                        ContractError::new("overflow", "the count would exceed u64::MAX")
                    })?;
                store::set(host, COUNT, &count);
                host.emit(ContractEvent {
                    kind: "incremented".into(),
                    attributes: vec![
                        ("org".into(), caller.org),
                        ("by".into(), by.to_string()),
                        ("count".into(), count.to_string()),
                    ],
                });
                ret(&count)
            }
            _ => Err(unknown_method(method)),
        }
    }

    fn query(host: &dyn Host, method: &str, input: &[u8]) -> ContractResult<Vec<u8>> {
        match method {
            "get" => {
                let () = args(input)?;
                ret(&store::get::<u64>(host, COUNT).unwrap_or(0))
            }
            _ => Err(unknown_method(method)),
        }
    }
}

fn unknown_method(method: &str) -> ContractError {
    ContractError::new("unknown_method", alloc::format!("no method `{method}`"))
}

trellis_contract::export_contract!(Counter);
