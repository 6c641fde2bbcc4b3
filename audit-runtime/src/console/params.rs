//! Query parameters of the API and the search pages: one parser for both, so a search page's
//! address and the API call behind it take the same names. Every failure names its parameter.

use crate::store::{CmpOp, Filter, FindOptions, Order};
use bson::oid::ObjectId;
use bson::Bson;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Page size when none is asked for.
pub(crate) const DEFAULT_LIMIT: u64 = 50;
/// The largest page.
pub(crate) const MAX_LIMIT: u64 = 1000;

/// A parameter the console cannot use, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadParam {
    pub(crate) name: String,
    pub(crate) message: String,
}

impl BadParam {
    fn new(name: &str, message: impl Into<String>) -> Self {
        BadParam {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// The query string's pairs, in order. Empty values count as absent: a search form submits every
/// field, filled or not.
pub(crate) fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value of each allowed name; unknown names and repeated names are errors.
fn take<'a>(
    pairs: &'a [(String, String)],
    allowed: &[&str],
) -> Result<impl Fn(&str) -> Option<&'a str> + 'a, BadParam> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(BadParam::new(
                k,
                format!("unknown parameter; expected one of: {}", allowed.join(", ")),
            ));
        }
        if pairs[..i].iter().any(|(p, _)| p == k) {
            return Err(BadParam::new(k, "given more than once"));
        }
    }
    Ok(move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })
}

/// `RFC 3339`, `YYYY-MM-DDTHH:MM[:SS]` (UTC, what a `datetime-local` field sends) or a bare
/// `YYYY-MM-DD`: the start of that day, or its end for an upper bound.
pub(crate) fn parse_time(name: &str, s: &str, end_of_day: bool) -> Result<DateTime<Utc>, BadParam> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = if end_of_day {
            NaiveTime::from_hms_milli_opt(23, 59, 59, 999).expect("valid time")
        } else {
            NaiveTime::MIN
        };
        return Ok(Utc.from_utc_datetime(&d.and_time(t)));
    }
    Err(BadParam::new(
        name,
        format!("`{s}` is not a date: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339"),
    ))
}

fn object_id(name: &str, s: &str) -> Result<ObjectId, BadParam> {
    ObjectId::parse_str(s)
        .map_err(|_| BadParam::new(name, format!("`{s}` is not an id (24 hexadecimal digits)")))
}

fn date_range(
    get: &impl Fn(&str) -> Option<String>,
    field: &str,
    parts: &mut Vec<Filter>,
) -> Result<(), BadParam> {
    let from = get("from")
        .map(|s| parse_time("from", &s, false))
        .transpose()?;
    let to = get("to").map(|s| parse_time("to", &s, true)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            return Err(BadParam::new("to", "is before `from`"));
        }
    }
    if let Some(f) = from {
        parts.push(Filter::gte(field, bson::DateTime::from_chrono(f)));
    }
    if let Some(t) = to {
        parts.push(Filter::lte(field, bson::DateTime::from_chrono(t)));
    }
    Ok(())
}

/// One search: the filter, the page size and where the page starts.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    pub(crate) filter: Filter,
    pub(crate) limit: u64,
    pub(crate) cursor: Option<ObjectId>,
    /// The parameters that define the search (not `cursor`), to build the next page's link.
    pub(crate) echo: Vec<(String, String)>,
}

impl Search {
    /// The page query: newest first by `_id`, which is unique and only grows for new records,
    /// so "everything older than the last id shown" is a stable place to continue from (the
    /// keyset), whatever is inserted meanwhile. One more than the page is asked for, to know
    /// whether there is a next page.
    pub(crate) fn options(&self, max_time: std::time::Duration) -> FindOptions {
        let mut parts = vec![self.filter.clone()];
        if let Some(c) = self.cursor {
            parts.push(Filter::Cmp("_id".into(), CmpOp::Lt, Bson::ObjectId(c)));
        }
        FindOptions::new(Filter::And(parts))
            .sort("_id", Order::Desc)
            .window(0, Some(self.limit + 1))
            .max_time(max_time)
    }
}

fn limit_and_cursor(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<(u64, Option<ObjectId>), BadParam> {
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(BadParam::new(
                    "limit",
                    format!("`{s}` is not a page size: expected 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    let cursor = get("cursor").map(|s| object_id("cursor", &s)).transpose()?;
    Ok((limit, cursor))
}

/// The access filters (the command line's), `limit` and `cursor`.
pub(crate) const ACCESS_PARAMS: &[&str] = &[
    "user_id",
    "url",
    "url_regex",
    "view",
    "method",
    "status",
    "exception",
    "interlink_id",
    "process",
    "from",
    "to",
    "limit",
    "cursor",
];

/// The model-action filters, `limit` and `cursor`.
pub(crate) const MODEL_ACTION_PARAMS: &[&str] = &[
    "model",
    "action",
    "instance_id",
    "access",
    "from",
    "to",
    "limit",
    "cursor",
];

fn echo(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter(|(k, _)| k != "cursor")
        .cloned()
        .collect()
}

/// An access search from query pairs.
pub(crate) fn access_search(pairs: &[(String, String)]) -> Result<Search, BadParam> {
    let raw = take(pairs, ACCESS_PARAMS)?;
    let get = |n: &str| raw(n).map(str::to_owned);
    let mut parts = Vec::new();
    if let (Some(_), Some(_)) = (get("url"), get("url_regex")) {
        return Err(BadParam::new(
            "url_regex",
            "use either `url` or `url_regex`",
        ));
    }
    if let Some(u) = get("user_id") {
        // Integer ids as the original stored them; any other text as a string id.
        let id = u
            .parse::<i64>()
            .map(Bson::Int64)
            .unwrap_or_else(|_| Bson::String(u.clone()));
        parts.push(Filter::Eq("user.id".into(), id));
    }
    if let Some(u) = get("url") {
        parts.push(Filter::eq("request.path", u));
    }
    if let Some(p) = get("url_regex") {
        if let Err(e) = regex::Regex::new(&p) {
            return Err(BadParam::new("url_regex", format!("invalid regex: {e}")));
        }
        parts.push(Filter::Regex {
            path: "request.path".into(),
            pattern: p,
            case_insensitive: false,
        });
    }
    if let Some(v) = get("view") {
        parts.push(Filter::eq("view.full_name", v));
    }
    if let Some(m) = get("method") {
        parts.push(Filter::eq(
            "request.METADATA.REQUEST_METHOD",
            m.to_ascii_uppercase(),
        ));
    }
    if let Some(s) = get("status") {
        match s.parse::<i32>() {
            Ok(n) if (100..=599).contains(&n) => parts.push(Filter::eq("response.status_code", n)),
            _ => {
                return Err(BadParam::new(
                    "status",
                    format!("`{s}` is not an HTTP status (100 to 599)"),
                ))
            }
        }
    }
    if let Some(e) = get("exception") {
        parts.push(Filter::eq("exception.type", e));
    }
    if let Some(i) = get("interlink_id") {
        parts.push(Filter::eq("interlink_id", i));
    }
    if let Some(p) = get("process") {
        parts.push(Filter::eq("process", object_id("process", &p)?));
    }
    date_range(&get, "time.request", &mut parts)?;
    let (limit, cursor) = limit_and_cursor(&get)?;
    Ok(Search {
        filter: Filter::And(parts),
        limit,
        cursor,
        echo: echo(pairs),
    })
}

/// A model-action search from query pairs.
pub(crate) fn model_action_search(pairs: &[(String, String)]) -> Result<Search, BadParam> {
    let raw = take(pairs, MODEL_ACTION_PARAMS)?;
    let get = |n: &str| raw(n).map(str::to_owned);
    let mut parts = Vec::new();
    if let Some(m) = get("model") {
        parts.push(Filter::eq("model.full_name", m));
    }
    if let Some(a) = get("action") {
        let a: crate::document::Action = a.parse().map_err(|e| BadParam::new("action", e))?;
        parts.push(Filter::eq("action", a.as_str()));
    }
    if let Some(i) = get("instance_id") {
        parts.push(Filter::eq("instance.id", i));
    }
    if let Some(a) = get("access") {
        parts.push(Filter::eq("access", object_id("access", &a)?));
    }
    date_range(&get, "timestamp", &mut parts)?;
    let (limit, cursor) = limit_and_cursor(&get)?;
    Ok(Search {
        filter: Filter::And(parts),
        limit,
        cursor,
        echo: echo(pairs),
    })
}

/// Bucket sizes of the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub(crate) fn millis(self) -> i64 {
        match self {
            Bucket::Minute => 60_000,
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}

/// The most buckets one statistics call draws.
pub(crate) const MAX_BUCKETS: i64 = 2000;

/// `from`, `to` (default: the last 24 hours) and `bucket` (default: hour) of the statistics.
#[derive(Debug, Clone)]
pub(crate) struct StatsParams {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) bucket: Bucket,
}

pub(crate) fn stats_params(
    pairs: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<StatsParams, BadParam> {
    let raw = take(pairs, &["from", "to", "bucket"])?;
    let to = raw("to")
        .map(|s| parse_time("to", s, true))
        .transpose()?
        .unwrap_or(now);
    let from = raw("from")
        .map(|s| parse_time("from", s, false))
        .transpose()?
        .unwrap_or(to - Duration::hours(24));
    if to < from {
        return Err(BadParam::new("to", "is before `from`"));
    }
    let bucket = match raw("bucket") {
        None | Some("hour") => Bucket::Hour,
        Some("minute") => Bucket::Minute,
        Some("day") => Bucket::Day,
        Some(other) => {
            return Err(BadParam::new(
                "bucket",
                format!("`{other}` is not a bucket: expected minute, hour or day"),
            ))
        }
    };
    let n = (to - from).num_milliseconds() / bucket.millis() + 1;
    if n > MAX_BUCKETS {
        return Err(BadParam::new(
            "bucket",
            format!("{n} buckets of one {} are too many (at most {MAX_BUCKETS}): choose a larger bucket or a shorter range", bucket.as_str()),
        ));
    }
    Ok(StatsParams { from, to, bucket })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Vec<(String, String)> {
        pairs(Some(q))
    }

    #[test]
    fn errors_name_the_parameter() {
        let bad = |q: &str| access_search(&p(q)).unwrap_err().name;
        assert_eq!(bad("user=3"), "user");
        assert_eq!(bad("url_regex=(a"), "url_regex");
        assert_eq!(bad("status=99"), "status");
        assert_eq!(bad("limit=0"), "limit");
        assert_eq!(bad("limit=1001"), "limit");
        assert_eq!(bad("cursor=zz"), "cursor");
        assert_eq!(bad("process=1"), "process");
        assert_eq!(bad("from=yesterday"), "from");
        assert_eq!(bad("from=2024-02-01&to=2024-01-01"), "to");
        assert_eq!(bad("view=a&view=b"), "view");
        let bad = |q: &str| model_action_search(&p(q)).unwrap_err().name;
        assert_eq!(bad("action=upsert"), "action");
        assert_eq!(bad("access=1"), "access");
    }

    #[test]
    fn empty_values_are_absent() {
        let s = access_search(&p("user_id=&url=&limit=")).unwrap();
        assert_eq!(s.filter, Filter::And(vec![]));
        assert_eq!(s.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn dates() {
        let t = parse_time("from", "2024-01-02", true).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-02T23:59:59.999+00:00");
        let t = parse_time("from", "2024-01-02T08:30", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-02T08:30:00+00:00");
    }

    #[test]
    fn too_many_buckets() {
        let now = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        let e = stats_params(&p("from=2023-01-01&bucket=minute"), now).unwrap_err();
        assert_eq!(e.name, "bucket");
        assert!(stats_params(&p("from=2023-01-01&bucket=day"), now).is_ok());
    }
}
