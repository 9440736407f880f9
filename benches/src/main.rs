//! The bench programs `cargo xtask bench` runs, in one release binary (one more
//! link of the whole dependency tree per program is what a second binary would cost):
//!
//! - `bench handlers`: handler overhead without storage or queue (criterion);
//! - `bench emulator`: the AWS emulator's own latency through the functions' adapters.

use std::process::ExitCode;

mod emulator;
mod handlers;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("handlers") => handlers::run(),
        Some("emulator") => emulator::run(),
        _ => {
            eprintln!("usage: bench handlers|emulator");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
