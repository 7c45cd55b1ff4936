//! The README's quickstart (the crates.io page) is the crate docs' quickstart, which rustdoc
//! compiles: this test keeps the two identical. Both files are inside the crate, so that it also
//! builds from the packaged crate.

const README: &str = include_str!("../README.md");
const LIB: &str = include_str!("../src/lib.rs");

/// The first fenced code block after `heading`, without its fences.
fn block_after(text: &str, heading: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    text[start..]
        .lines()
        .skip_while(|line| !line.starts_with("```"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_quickstart_is_the_crate_docs_quickstart() {
    let lib: String = LIB
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    // Lines rustdoc hides (`# `) are shown in the README.
    let from_docs: Vec<String> = block_after(&lib, "# Quickstart")
        .into_iter()
        .map(|line| line.strip_prefix("# ").map_or(line.clone(), str::to_owned))
        .collect();
    let from_readme = block_after(README, "## Quickstart");
    assert!(
        from_docs.len() > 10,
        "quickstart not found in the crate docs"
    );
    assert_eq!(
        from_readme, from_docs,
        "README.md and src/lib.rs quickstarts differ"
    );
}
