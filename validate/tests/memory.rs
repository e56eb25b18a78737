//! Loading YAML takes memory in proportion to the file, whatever its shape: the hostile shapes
//! fuzzing found (an alias of a big scalar repeated, long keys nested deep above many short
//! ones) stay under 20 times the file's size plus 1 MiB at their peak — they used to pass 2 GB
//! with files of about 1 MB. Measured with an allocator that records the peak; the tests of
//! this file run one after another (one test function) so that none sees another's memory.

#![allow(clippy::unwrap_used)]

use std::alloc::System;

use mirrorfleet_validate::yaml::load;
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Loads `text` and returns the peak of memory allocated meanwhile, the text excluded.
fn peak_while_loading(text: &str) -> (usize, Option<String>) {
    GLOBAL.reset_peak_memory();
    let (docs, err) = load(text);
    let peak = GLOBAL.get_peak_memory();
    drop(docs);
    (peak, err.map(|e| e.message))
}

fn bound(text: &str) -> usize {
    20 * text.len() + (1 << 20)
}

#[test]
fn hostile_shapes_stay_within_twenty_times_the_file() {
    // One 64 KiB scalar aliased 100,000 times (565 KB of YAML).
    let mut aliases = format!("big: &big {}\nlist:\n", "x".repeat(64 * 1024));
    for _ in 0..100_000 {
        aliases.push_str("- *big\n");
    }
    let (peak, err) = peak_while_loading(&aliases);
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("expands to more than")),
        "{err:?}"
    );
    eprintln!("aliases: {peak} bytes for {}", aliases.len());
    assert!(
        peak < bound(&aliases),
        "aliases: peak {peak} bytes for a {} byte file",
        aliases.len()
    );

    // 60 nested 900-byte keys, then 100,000 short keys (about 1.1 MB of YAML): read in full.
    let mut nested = String::new();
    for i in 0..60 {
        nested.push_str(&format!("k{i}{}: {{", "y".repeat(900)));
    }
    for j in 0..100_000 {
        nested.push_str(&format!("a{j}: 1, "));
    }
    nested.push_str(&"}".repeat(60));
    let (peak, err) = peak_while_loading(&nested);
    assert_eq!(err, None);
    eprintln!("nested keys: {peak} bytes for {}", nested.len());
    assert!(
        peak < bound(&nested),
        "nested keys: peak {peak} bytes for a {} byte file",
        nested.len()
    );

    // For comparison, ordinary manifests: 20,000 small documents. Each costs about 2 KiB as
    // JSON values (a B-tree node per mapping, however small), so these run near 21 times
    // their text; the bound for them is 32 times.
    let mut plain = String::new();
    for i in 0..20_000 {
        plain.push_str(&format!(
            "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s{i}\nspec:\n  displayName: Sponsor {i}\n"
        ));
    }
    let (peak, err) = peak_while_loading(&plain);
    assert_eq!(err, None);
    assert!(
        peak < 32 * plain.len() + (1 << 20),
        "plain: peak {peak} for {}",
        plain.len()
    );
    eprintln!("plain: {peak} bytes for {}", plain.len());
}
