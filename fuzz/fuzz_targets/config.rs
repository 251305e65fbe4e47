//! The config loader: YAML text to a validated config, or an error naming the file. Nothing
//! is read from or written to the file system (`config::parse` takes the text).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match tokengate::config::parse(Path::new("fuzz.yaml"), text) {
        Ok(config) => {
            // Cross-references were checked: every route names a real upstream.
            for route in &config.routes {
                assert!(route.upstream < config.upstreams.len());
            }
            assert!(config.server.max_header_bytes > 0);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("fuzz.yaml"),
                "the error names the file: {message}"
            );
        }
    }
});
