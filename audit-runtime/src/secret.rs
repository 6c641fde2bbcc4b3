//! The pure rules about secret names that both the settings (which validate the names they are
//! given) and the redaction policy (which applies them) need: how a name is normalised, and where
//! a connection string keeps its credentials. It depends on nothing else in the crate, so that the
//! settings can sit below the policy built from them.

/// Splits what follows `scheme://` into the user info (without its `@`) and the rest. The user
/// info ends at the last `@` whose host part (up to `/` or `?`) is a plain host list, not a query
/// option: a password may hold `/`, `?` or `@` when it was not percent-encoded, and must then
/// neither be shown as a host nor as a database name.
pub(crate) fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    let at = rest
        .char_indices()
        .rev()
        .filter(|(_, c)| *c == '@')
        .find_map(|(i, _)| {
            let host = rest[i + 1..].split(['/', '?']).next().unwrap_or_default();
            (!host.contains(['=', '&'])).then_some(i)
        });
    match at {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    }
}

/// A name in the matcher's normal form: camelCase split, lower case, `-`/`.`/space/`_` as `_`,
/// `http_` and `x_` prefixes removed.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.' | ' ' | '\t') {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else if c.is_uppercase() {
            if prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    let mut n = out.trim_matches('_');
    while let Some(rest) = n.strip_prefix("http_").or_else(|| n.strip_prefix("x_")) {
        n = rest;
    }
    n.to_owned()
}
