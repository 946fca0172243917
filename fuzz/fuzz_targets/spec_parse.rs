//! Service definitions from arbitrary text (see `checks::spec_parse`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::spec_parse(data));
