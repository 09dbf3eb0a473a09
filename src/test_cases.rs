//! How many cases the crate's property tests run.

/// `default` cases, unless the `PROPTEST_CASES` environment variable asks for another number:
/// a soak run raises it for every property test at once, including those whose case count
/// is set in code (which proptest's own reading of the variable would not change).
pub(crate) fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}
