//! Service definitions from arbitrary text: never a panic; whatever parses
//! holds only valid names and survives a round trip through TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/defs/svc.toml");
    if let Ok(def) = mcp::spec::parse_service(path, text) {
        assert_eq!(def.name.as_str(), "svc");
        for c in &def.components {
            assert!(mcp::names::Name::parse(c.name.as_str()).is_ok());
        }
        let again = mcp::spec::to_toml(&def);
        let reparsed = mcp::spec::parse_service(path, &again)
            .unwrap_or_else(|e| panic!("{again}\n{e}"));
        assert_eq!(reparsed, def);
    }
});
