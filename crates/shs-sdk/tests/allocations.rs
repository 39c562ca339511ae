//! The raw invoke path allocates nothing per request: a counting allocator sees the same
//! number of allocations for 10 requests as for 2010 (the buffers are allocated once). With a
//! nested input, serde_json allocates one small stack per line to capture it as raw JSON.

#![allow(unsafe_code)] // a global allocator that counts is the only way to see allocations
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; counting has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A writer that throws its bytes away.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn allocations_for(requests: usize, input: &str) -> usize {
    let input_json = input;
    let mut input = String::new();
    for id in 0..requests {
        input.push_str(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"invoke","params":{{"input":{input_json},"context":{{"request_id":"0199c8f0-6b1e-7cc2-9a3e-5e2f1d7c8b9a","function":"echo"}}}}}}"#
        ));
        input.push('\n');
    }
    let function = shs_sdk::Function::new().on_invoke_raw(|input, _ctx| Ok(input.into()));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    function.run_with(input.as_bytes(), Discard).unwrap();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn the_raw_echo_path_does_not_allocate_per_request() {
    let flat = r#"{"n":1,"text":"some text","ok":true}"#;
    let few = allocations_for(10, flat);
    let many = allocations_for(2010, flat);
    assert!(
        many <= few + 4,
        "10 requests: {few} allocations; 2010 requests: {many}"
    );
    let nested = r#"{"n":1,"tags":["a","b"],"user":{"name":"Ada"}}"#;
    let few = allocations_for(10, nested);
    let many = allocations_for(2010, nested);
    assert!(
        many <= few + 2000 + 4,
        "nested input, 10 requests: {few} allocations; 2010 requests: {many}"
    );
}
