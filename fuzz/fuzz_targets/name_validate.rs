//! Names: accepted exactly when they match ^[a-z0-9][a-z0-9-]{0,62}$, so a
//! name can never be a path or an option.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let expected = !s.is_empty()
        && s.len() <= 63
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    assert_eq!(mcp::names::Name::parse(s).is_ok(), expected, "{s:?}");
    if let Ok(target) = s.parse::<mcp::names::Target>() {
        assert!(!target.to_string().contains(".."));
        assert_eq!(target.to_string(), s);
    }
});
