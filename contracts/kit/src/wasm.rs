//! The guest side of host ABI v1 (`docs/contracts.md`), for `wasm32` only.
//!
//! [`WasmHost`] implements [`Host`] over the `trellis_v1` imports. The module
//! also installs what a `no_std` contract needs to link: a bump allocator
//! (an instance lives for one call, so nothing is ever freed back to the host)
//! and a panic handler that hands the panic message to `abort`, which traps.
//! [`run_call`] and [`run_query`] are the bodies of the `call` and `query`
//! exports that [`crate::export_contract!`] generates.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::fmt::{self, Write};

use crate::{
    BlockInfo, Caller, Contract, ContractError, ContractEvent, ContractResult, Host, Invocation,
    Role, codec,
};

/// The raw imports, exactly as `docs/contracts.md` lists them. Pointers are
/// `i32` in the wasm32 ABI.
mod sys {
    #[link(wasm_import_module = "trellis_v1")]
    unsafe extern "C" {
        pub fn input() -> i32;
        pub fn result_read(ptr: *mut u8);
        pub fn storage_get(key_ptr: *const u8, key_len: i32) -> i32;
        pub fn storage_set(key_ptr: *const u8, key_len: i32, val_ptr: *const u8, val_len: i32);
        pub fn storage_remove(key_ptr: *const u8, key_len: i32);
        pub fn storage_next(
            prefix_ptr: *const u8,
            prefix_len: i32,
            after_ptr: *const u8,
            after_len: i32,
        ) -> i32;
        pub fn caller() -> i32;
        pub fn block() -> i32;
        pub fn member_roles(org_ptr: *const u8, org_len: i32) -> i32;
        pub fn emit(ptr: *const u8, len: i32);
        pub fn set_output(ptr: *const u8, len: i32);
        pub fn set_error(ptr: *const u8, len: i32);
        pub fn abort(msg_ptr: *const u8, msg_len: i32);
        pub fn blake3(ptr: *const u8, len: i32, out_ptr: *mut u8);
        pub fn index_set(key_ptr: *const u8, key_len: i32, val_ptr: *const u8, val_len: i32);
        pub fn index_remove(key_ptr: *const u8, key_len: i32);
        pub fn index_next(
            prefix_ptr: *const u8,
            prefix_len: i32,
            after_ptr: *const u8,
            after_len: i32,
        ) -> i32;
    }
}

/// A length for the ABI. Linear memory is at most 4 GiB, so a slice in it
/// always fits; the cast is the wasm32 `usize -> i32` reinterpretation.
fn len(bytes: &[u8]) -> i32 {
    bytes.len() as i32
}

/// Copies the result buffer out after a host function reported `len`
/// (`-1`, or any negative length, meaning "none").
fn take_result(len: i32) -> Option<Vec<u8>> {
    if len < 0 {
        return None;
    }
    let len = len as usize;
    let mut buf = Vec::with_capacity(len);
    // SAFETY: the host writes exactly `len` bytes (the length it just
    // reported) at `ptr`, which has room for them; then they are initialised.
    unsafe {
        sys::result_read(buf.as_mut_ptr());
        buf.set_len(len);
    }
    Some(buf)
}

/// Decodes a value the host produced; one that does not decode is a host bug,
/// so the call traps rather than carrying on with a guess.
fn from_host<T: serde::Serialize + serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> T {
    match codec::decode(bytes) {
        Ok(v) => v,
        Err(e) => panic!("host returned a malformed {what}: {e}"),
    }
}

/// Traps with `message` (the host reports it as the call's `trap` reason).
pub fn abort(message: &str) -> ! {
    // SAFETY: the pointer and length describe a live &str.
    unsafe { sys::abort(message.as_ptr(), len(message.as_bytes())) };
    // `abort` traps in the host and never returns; should one ever come back,
    // trap here instead.
    core::arch::wasm32::unreachable()
}

/// The chain, reached through the `trellis_v1` imports.
///
/// Build one per call (the generated exports do). Contract code sees it only
/// as `&mut dyn Host` / `&dyn Host`, exactly like the native test host.
pub struct WasmHost {
    _private: (),
}

impl WasmHost {
    pub fn new() -> Self {
        WasmHost { _private: () }
    }

    /// The invocation this instance was started for.
    pub fn invocation(&self) -> ContractResult<Invocation> {
        // SAFETY: plain import call; the result is read by take_result.
        let bytes = take_result(unsafe { sys::input() }).unwrap_or_default();
        codec::decode(&bytes).map_err(|e| {
            ContractError::new(
                "bad_invocation",
                alloc::format!("invocation does not decode: {e}"),
            )
        })
    }
}

impl Default for WasmHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Host for WasmHost {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // SAFETY: pointer/length of a live slice.
        take_result(unsafe { sys::storage_get(key.as_ptr(), len(key)) })
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        // SAFETY: pointers/lengths of live slices.
        unsafe { sys::storage_set(key.as_ptr(), len(key), value.as_ptr(), len(value)) }
    }

    fn remove(&mut self, key: &[u8]) {
        // SAFETY: pointer/length of a live slice.
        unsafe { sys::storage_remove(key.as_ptr(), len(key)) }
    }

    fn next(&self, prefix: &[u8], after: Option<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)> {
        next_with(sys::storage_next, prefix, after)
    }

    fn caller(&self) -> Caller {
        // SAFETY: plain import call.
        let bytes = take_result(unsafe { sys::caller() })
            .unwrap_or_else(|| abort("host returned no caller"));
        from_host(&bytes, "caller")
    }

    fn block(&self) -> BlockInfo {
        // SAFETY: plain import call.
        let bytes =
            take_result(unsafe { sys::block() }).unwrap_or_else(|| abort("host returned no block"));
        from_host(&bytes, "block")
    }

    fn member_roles(&self, org: &str) -> Option<Vec<Role>> {
        // SAFETY: pointer/length of a live str.
        let bytes = take_result(unsafe { sys::member_roles(org.as_ptr(), len(org.as_bytes())) })?;
        Some(from_host(&bytes, "role list"))
    }

    fn emit(&mut self, event: ContractEvent) {
        let bytes = codec::encode(&event);
        // SAFETY: pointer/length of a live Vec.
        unsafe { sys::emit(bytes.as_ptr(), len(&bytes)) }
    }

    fn blake3(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // SAFETY: `out` has the 32 bytes the host writes.
        unsafe { sys::blake3(data.as_ptr(), len(data), out.as_mut_ptr()) };
        out
    }

    fn index_set(&mut self, key: &[u8], value: &[u8]) {
        // SAFETY: pointers/lengths of live slices.
        unsafe { sys::index_set(key.as_ptr(), len(key), value.as_ptr(), len(value)) }
    }

    fn index_remove(&mut self, key: &[u8]) {
        // SAFETY: pointer/length of a live slice.
        unsafe { sys::index_remove(key.as_ptr(), len(key)) }
    }

    fn index_next(&self, prefix: &[u8], after: Option<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)> {
        next_with(sys::index_next, prefix, after)
    }
}

/// `storage_next` or `index_next`: the first entry under `prefix` after `after`.
fn next_with(
    import: unsafe extern "C" fn(*const u8, i32, *const u8, i32) -> i32,
    prefix: &[u8],
    after: Option<&[u8]>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let (after_ptr, after_len) = match after {
        Some(a) => (a.as_ptr(), len(a)),
        None => (core::ptr::null(), -1),
    };
    // SAFETY: pointers/lengths of live slices (`after_len = -1` tells the
    // host not to read `after_ptr`).
    let found = take_result(unsafe { import(prefix.as_ptr(), len(prefix), after_ptr, after_len) })?;
    Some(from_host(&found, "storage entry"))
}

/// Body of the `call` export: decode the invocation, run `C::call`, report.
pub fn run_call<C: Contract>() -> i32 {
    let mut host = WasmHost::new();
    let result = host
        .invocation()
        .and_then(|inv| C::call(&mut host, &inv.method, &inv.args));
    finish(result)
}

/// Body of the `query` export: decode the invocation, run `C::query`, report.
pub fn run_query<C: Contract>() -> i32 {
    let host = WasmHost::new();
    let result = host
        .invocation()
        .and_then(|inv| C::query(&host, &inv.method, &inv.args));
    finish(result)
}

/// `set_output` and 0 on success; `set_error` and 1 on a contract error.
fn finish(result: ContractResult<Vec<u8>>) -> i32 {
    match result {
        Ok(output) => {
            // SAFETY: pointer/length of a live Vec.
            unsafe { sys::set_output(output.as_ptr(), len(&output)) };
            0
        }
        Err(error) => {
            let bytes = codec::encode(&error);
            // SAFETY: pointer/length of a live Vec.
            unsafe { sys::set_error(bytes.as_ptr(), len(&bytes)) };
            1
        }
    }
}

// ---------------------------------------------------------------------------
// Allocator

const PAGE: usize = 65_536;

unsafe extern "C" {
    /// First byte past the static data and the stack, set by the linker.
    static __heap_base: u8;
}

/// Hands out memory from `next` upwards, growing linear memory a page range
/// at a time. Only the latest allocation is ever given back or grown in
/// place (which is what a growing `Vec` being built wants); everything else
/// lives until the instance is dropped at the end of the call.
struct BumpAlloc {
    /// Next free byte; 0 until the first allocation.
    next: Cell<usize>,
    /// End of linear memory as last seen.
    end: Cell<usize>,
}

// SAFETY: wasm32-unknown-unknown without the atomics feature has one thread.
unsafe impl Sync for BumpAlloc {}

impl BumpAlloc {
    /// Makes sure memory reaches `end`, growing it if needed; aborts when the
    /// host refuses (the memory cap).
    fn reserve_to(&self, end: usize) {
        if end <= self.end.get() {
            return;
        }
        let pages = (end - self.end.get()).div_ceil(PAGE);
        let before = core::arch::wasm32::memory_grow(0, pages);
        if before == usize::MAX {
            abort("out of memory");
        }
        self.end.set((before + pages) * PAGE);
    }

    fn start(&self) -> usize {
        if self.next.get() == 0 {
            // Only the address of the linker symbol is taken, never its value.
            self.next.set(&raw const __heap_base as usize);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        self.next.get()
    }
}

unsafe impl GlobalAlloc for BumpAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let next = self.start();
        // Layout guarantees a power-of-two alignment.
        let Some(begin) = next
            .checked_add(layout.align() - 1)
            .map(|n| n & !(layout.align() - 1))
        else {
            abort("out of memory");
        };
        let Some(end) = begin.checked_add(layout.size()) else {
            abort("out of memory");
        };
        self.reserve_to(end);
        self.next.set(end);
        begin as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let begin = ptr as usize;
        if begin + layout.size() == self.next.get() {
            // The latest allocation: grow or shrink it where it is.
            let Some(end) = begin.checked_add(new_size) else {
                abort("out of memory");
            };
            self.reserve_to(end);
            self.next.set(end);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout.align()` with `new_size` is a
        // valid layout (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded GlobalAlloc contract; the regions do not overlap
        // because the new one starts at or past the old `next`.
        unsafe {
            let new = self.alloc(new_layout);
            core::ptr::copy_nonoverlapping(ptr, new, layout.size());
            new
        }
    }
}

#[global_allocator]
static ALLOCATOR: BumpAlloc = BumpAlloc {
    next: Cell::new(0),
    end: Cell::new(0),
};

// ---------------------------------------------------------------------------
// Panics

/// A fixed buffer that keeps the first bytes written to it and drops the
/// rest, cutting on a character boundary so the message stays UTF-8.
struct Truncating {
    buf: [u8; 256],
    len: usize,
}

impl Write for Truncating {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut message = Truncating {
        buf: [0; 256],
        len: 0,
    };
    // Writing to Truncating never fails; a Display impl that does just ends
    // the message early.
    let _ = write!(message, "{}", info.message());
    // Only whole characters were copied in, so this is valid UTF-8.
    let text = core::str::from_utf8(&message.buf[..message.len]).unwrap_or("panic");
    abort(text)
}
