//! Proves the Media Streams hot path allocation-free: parsing a `media` frame and building one.
//! Its own test binary (apart from the server's one), because it installs a counting global allocator.

// A counting global allocator is unsafe by definition; nothing else in the workspace is.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use twilio::messages::{self, Inbound};

struct CountingAllocator;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// const-initialised thread-local `Cell`, which itself never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// 20 ms of 8 kHz μ-law is 160 bytes, 216 characters of base64. Unknown scalar fields are skipped
/// for free; skipping an unknown nested object or array costs serde_json one small allocation.
fn frame() -> String {
    let payload = "/v7+fn5+".repeat(27);
    format!(
        r#"{{"event":"media","sequenceNumber":"1234","media":{{"track":"inbound","chunk":"1233","timestamp":"24660","payload":"{payload}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","futureField":"ignored","futureCount":7}}"#
    )
}

#[test]
fn parsing_a_media_frame_allocates_nothing() {
    let text = frame();
    let mut payload_len = 0;
    let n = allocations_during(|| {
        for _ in 0..1000 {
            match messages::parse(&text) {
                Ok(Inbound::Media(media)) => payload_len += media.payload.len(),
                other => panic!("not media: {other:?}"),
            }
        }
    });
    assert_eq!(payload_len, 216 * 1000);
    assert_eq!(n, 0, "parse allocated {n} times in 1000 frames");
}

#[test]
fn building_frames_into_a_warm_buffer_allocates_nothing() {
    let payload = "/v7+fn5+".repeat(27);
    let stream_sid = "MZ18ad3ab5a668481ce02b83e7395059f0";
    let mut buf = String::new();
    messages::media(&mut buf, stream_sid, &payload);
    let n = allocations_during(|| {
        for i in 0..1000 {
            messages::media(&mut buf, stream_sid, &payload);
            if i % 50 == 0 {
                messages::mark(&mut buf, stream_sid, "utterance-1");
                messages::clear(&mut buf, stream_sid);
            }
        }
    });
    assert_eq!(n, 0, "building allocated {n} times in 1000 frames");
    assert!(buf.starts_with(r#"{"event":"media""#));
}

#[test]
fn the_counter_does_count() {
    let n = allocations_during(|| drop(std::hint::black_box(String::from("x"))));
    assert_eq!(n, 1);
}
