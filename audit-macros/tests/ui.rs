//! Compile-fail and pass tests of the macros: one error per file, with its expected `.stderr`
//! (regenerate with `TRYBUILD=overwrite cargo test -p audit-macros --test ui` and review the diff).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
