//! `mirrorfleet validate` on a file of any bytes (what a pull request can hold): the YAML layer,
//! the schema walk, CEL rules and cross-resource rules. The schemas and CEL rules are compiled
//! once per process, so each input costs only its own checking.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use mirrorfleet_validate::{Options, SourceFile, Validator};

thread_local! {
    static VALIDATOR: RefCell<Validator> = RefCell::new(Validator::new());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    VALIDATOR.with(|v| {
        let files = [SourceFile {
            name: "fuzz.yaml",
            text,
        }];
        let outcome = v.borrow_mut().validate(&files, Options::default());
        for problem in &outcome.problems {
            // Every problem names the file; printing one must not panic either.
            assert_eq!(problem.file, "fuzz.yaml");
            let _ = problem.to_string();
        }
    });
});
