//! The blacklist: per-app lists of regexes, plus the `""` key that applies to every app. A
//! request whose path matches any pattern is not audited.
//!
//! Patterns are compiled once, at startup, with `fancy-regex`, because the original's own demo uses
//! a negative look-ahead (`^(?!(/access/|/modelaction/)).*$`) that the `regex` crate rejects.
//! fancy-regex hands look-around-free patterns to `regex` (linear time); the others run under a
//! backtracking limit, and a pattern that hits it counts as "no match", so a hostile path can at
//! worst get audited, never stall a request.

use std::collections::BTreeMap;

/// One compiled blacklist.
#[derive(Debug, Clone, Default)]
pub struct Blacklist {
    per_app: BTreeMap<String, Vec<fancy_regex::Regex>>,
    global: Vec<fancy_regex::Regex>,
    sources: BTreeMap<String, Vec<String>>,
}

/// A pattern that does not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("blacklist.{app:?}: invalid regex `{pattern}`: {reason}")]
pub struct BlacklistError {
    /// The app key (`""` for the global list).
    pub app: String,
    /// The pattern as written.
    pub pattern: String,
    /// What the regex engine said.
    pub reason: String,
}

/// Upper bound on backtracking steps for look-around patterns; far above any sane URL pattern.
const BACKTRACK_LIMIT: usize = 100_000;

impl Blacklist {
    /// Compiles every pattern; the first one that does not compile is the error.
    pub fn compile(entries: &BTreeMap<String, Vec<String>>) -> Result<Self, BlacklistError> {
        let mut bl = Blacklist {
            sources: entries.clone(),
            ..Default::default()
        };
        for (app, patterns) in entries {
            let compiled = patterns
                .iter()
                .map(|p| {
                    fancy_regex::RegexBuilder::new(p)
                        .backtrack_limit(BACKTRACK_LIMIT)
                        .build()
                        .map_err(|e| BlacklistError {
                            app: app.clone(),
                            pattern: p.clone(),
                            reason: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if app.is_empty() {
                bl.global = compiled;
            } else {
                bl.per_app.insert(app.clone(), compiled);
            }
        }
        Ok(bl)
    }

    /// True when `path` (no query string) is blacklisted for a view of `app`: the app's patterns,
    /// then the global ones, with search (unanchored) semantics, case-sensitive, as the original matched.
    pub fn is_blacklisted(&self, app: &str, path: &str) -> bool {
        let app_patterns = self.per_app.get(app).map(Vec::as_slice).unwrap_or_default();
        app_patterns.iter().chain(&self.global).any(|re| match re.is_match(path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(pattern = re.as_str(), path, error = %e, "blacklist pattern gave up; request is audited");
                false
            }
        })
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.per_app.is_empty() && self.global.is_empty()
    }

    /// The patterns as configured.
    pub fn sources(&self) -> &BTreeMap<String, Vec<String>> {
        &self.sources
    }
}
