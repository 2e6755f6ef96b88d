//! The config parser: any text gives a config or a ConfigError naming a
//! line within the file; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = wimark_ha::config::parse(text, std::path::Path::new("fuzz.toml")) {
        assert!(error.line <= text.lines().count() + 1, "{error}");
    }
});
