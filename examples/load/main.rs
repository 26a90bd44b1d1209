//! A load driver for the MCP adapter (work in progress).
#![allow(dead_code, reason = "the driver is being built")]
#![allow(
    unreachable_pub,
    reason = "the modules' interfaces are shared between engineers"
)]

mod faults;
mod redis;

fn main() {}
