//! `audit access list`, `audit model-action list` and `audit process list`: the newest records
//! matching the filters, as a table or as JSON lines. Each kind takes only the filters that apply
//! to its records, so `--help` shows exactly those and anything else is refused by the parser.

use super::dates::date_filter;
use super::format::{json_line, table_row};
use super::{open_for_reading, CliError, Kind};
use crate::config::AuditConfig;
use crate::document::Action;
use crate::query::UrlMatch;
use crate::store::{Filter, FindOptions, Order};
use bson::Bson;
use clap::Args;
use std::io::Write;

/// What every list takes: the date range, the number of rows and the output form.
#[derive(Args, Debug, Default)]
pub(super) struct CommonListArgs {
    /// From this date (DATE[THH:MM]).
    #[arg(long)]
    from: Option<String>,
    /// Up to this date (a bare DATE includes the whole day).
    #[arg(long)]
    to: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    limit: u64,
    /// One JSON object per line (relaxed Extended JSON, the stored field names).
    #[arg(long)]
    json: bool,
}

/// The filters of `access list`.
#[derive(Args, Debug, Default)]
pub(super) struct AccessListArgs {
    /// Exact request path.
    #[arg(long)]
    url: Option<String>,
    /// Request path matching a regex.
    #[arg(long)]
    url_regex: Option<String>,
    /// Request path containing a text.
    #[arg(long)]
    url_contains: Option<String>,
    /// User id, exactly as stored: an integer written the usual way (`23`), else a string id.
    #[arg(long)]
    user_id: Option<String>,
    /// A string user id, even one that looks like an integer (`--user-id-string 23`).
    #[arg(long)]
    user_id_string: Option<String>,
    /// Handler full name.
    #[arg(long)]
    view: Option<String>,
    /// Exception type.
    #[arg(long)]
    exception: Option<String>,
    /// Correlation id.
    #[arg(long)]
    interlink: Option<String>,
    /// Response status: a code (`404`) or a class (`5xx`).
    #[arg(long)]
    status: Option<String>,
    /// HTTP method (`POST`; any case).
    #[arg(long)]
    method: Option<String>,
    #[command(flatten)]
    common: CommonListArgs,
}

/// The filters of `model-action list`.
#[derive(Args, Debug, Default)]
pub(super) struct ModelActionListArgs {
    /// Model full name (repeatable: any of them, exactly).
    #[arg(long)]
    model: Vec<String>,
    /// Instance id.
    #[arg(long)]
    instance: Option<String>,
    /// create, update or delete.
    #[arg(long)]
    action: Option<String>,
    /// The access (its id) the actions were made in.
    #[arg(long)]
    access: Option<String>,
    #[command(flatten)]
    common: CommonListArgs,
}

/// The filters of `process list`.
#[derive(Args, Debug, Default)]
pub(super) struct ProcessListArgs {
    /// Correlation id.
    #[arg(long)]
    interlink: Option<String>,
    #[command(flatten)]
    common: CommonListArgs,
}

/// A user id as stored: an integer when the text is one written the usual way (`23`, `-5`),
/// else the string itself, so `0023` and `+23` are the strings they are and never the integer 23.
/// A string id that looks like an integer is named with `--user-id-string`.
pub(super) fn user_id_value(s: &str) -> Bson {
    match s.parse::<i64>() {
        Ok(i) if i.to_string() == s => Bson::Int64(i),
        _ => Bson::String(s.to_owned()),
    }
}

/// `--user-id` or `--user-id-string` (at most one), as the value stored in `user.id`.
pub(super) fn user_id_arg(
    id: Option<&str>,
    string: Option<&str>,
) -> Result<Option<Bson>, CliError> {
    match (id, string) {
        (Some(_), Some(_)) => Err(CliError::Conflicting("--user-id, --user-id-string")),
        (Some(id), None) => Ok(Some(user_id_value(id))),
        (None, Some(s)) => Ok(Some(Bson::String(s.to_owned()))),
        (None, None) => Ok(None),
    }
}

impl AccessListArgs {
    fn filter(&self) -> Result<Filter, CliError> {
        let c = Kind::Access.collection();
        let mut parts = vec![date_filter(
            c,
            self.common.from.as_deref(),
            self.common.to.as_deref(),
        )?];
        let urls = [
            self.url.is_some(),
            self.url_regex.is_some(),
            self.url_contains.is_some(),
        ];
        if urls.iter().filter(|b| **b).count() > 1 {
            return Err(CliError::Conflicting("--url, --url-regex, --url-contains"));
        }
        let url = self
            .url
            .clone()
            .map(UrlMatch::Exact)
            .or_else(|| self.url_regex.clone().map(UrlMatch::Regex))
            .or_else(|| self.url_contains.clone().map(UrlMatch::Contains));
        if let Some(m) = url {
            parts.push(
                m.to_filter("request.path")
                    .map_err(CliError::InvalidFilter)?,
            );
        }
        if let Some(u) = user_id_arg(self.user_id.as_deref(), self.user_id_string.as_deref())? {
            parts.push(Filter::Eq("user.id".into(), u));
        }
        if let Some(v) = &self.view {
            parts.push(Filter::eq("view.full_name", v.as_str()));
        }
        if let Some(e) = &self.exception {
            parts.push(Filter::eq("exception.type", e.as_str()));
        }
        if let Some(i) = &self.interlink {
            parts.push(Filter::eq("interlink_id", i.as_str()));
        }
        if let Some(s) = &self.status {
            parts.push(status_filter(s)?);
        }
        if let Some(m) = &self.method {
            parts.push(Filter::eq(
                "request.METADATA.REQUEST_METHOD",
                m.to_ascii_uppercase(),
            ));
        }
        Ok(Filter::And(parts))
    }
}

/// `--status`: a code (`404`), or a class (`4xx`: 400 to 499).
fn status_filter(s: &str) -> Result<Filter, CliError> {
    let bad = || CliError::InvalidStatus(s.to_owned());
    let path = "response.status_code";
    if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
        let c: i64 = class
            .parse()
            .ok()
            .filter(|c| (1..=5).contains(c))
            .ok_or_else(bad)?;
        return Ok(Filter::And(vec![
            Filter::gte(path, c * 100),
            Filter::Cmp(
                path.into(),
                crate::store::filter::CmpOp::Lt,
                Bson::Int64(c * 100 + 100),
            ),
        ]));
    }
    let code: i64 = s
        .parse()
        .ok()
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(bad)?;
    Ok(Filter::eq(path, code))
}

impl ModelActionListArgs {
    fn filter(&self) -> Result<Filter, CliError> {
        let c = Kind::ModelAction.collection();
        let mut parts = vec![date_filter(
            c,
            self.common.from.as_deref(),
            self.common.to.as_deref(),
        )?];
        if !self.model.is_empty() {
            parts.push(Filter::In(
                "model.full_name".into(),
                self.model.iter().map(|m| Bson::String(m.clone())).collect(),
            ));
        }
        if let Some(i) = &self.instance {
            parts.push(Filter::eq("instance.id", i.as_str()));
        }
        if let Some(act) = &self.action {
            let act: Action = act.parse().map_err(CliError::InvalidAction)?;
            parts.push(Filter::eq("action", act.as_str()));
        }
        if let Some(a) = &self.access {
            let id = a
                .parse::<bson::oid::ObjectId>()
                .map_err(|source| CliError::InvalidId {
                    id: a.clone(),
                    source,
                })?;
            parts.push(Filter::eq("access", id));
        }
        Ok(Filter::And(parts))
    }
}

impl ProcessListArgs {
    fn filter(&self) -> Result<Filter, CliError> {
        let c = Kind::Process.collection();
        let mut parts = vec![date_filter(
            c,
            self.common.from.as_deref(),
            self.common.to.as_deref(),
        )?];
        if let Some(i) = &self.interlink {
            parts.push(Filter::eq("interlink_id", i.as_str()));
        }
        Ok(Filter::And(parts))
    }
}

/// The arguments of one of the three lists.
pub(super) enum ListArgs {
    Access(AccessListArgs),
    ModelAction(ModelActionListArgs),
    Process(ProcessListArgs),
}

impl ListArgs {
    fn kind(&self) -> Kind {
        match self {
            ListArgs::Access(_) => Kind::Access,
            ListArgs::ModelAction(_) => Kind::ModelAction,
            ListArgs::Process(_) => Kind::Process,
        }
    }

    fn filter(&self) -> Result<Filter, CliError> {
        match self {
            ListArgs::Access(a) => a.filter(),
            ListArgs::ModelAction(a) => a.filter(),
            ListArgs::Process(a) => a.filter(),
        }
    }

    fn common(&self) -> &CommonListArgs {
        match self {
            ListArgs::Access(a) => &a.common,
            ListArgs::ModelAction(a) => &a.common,
            ListArgs::Process(a) => &a.common,
        }
    }
}

/// Prints the newest records matching `args`, newest first.
pub(super) async fn list(
    config: &AuditConfig,
    args: ListArgs,
    query_timeout: std::time::Duration,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let kind = args.kind();
    let c = kind.collection();
    let filter = args.filter()?;
    let common = args.common();
    let store = open_for_reading(config).await?;
    let opts = FindOptions::new(filter)
        .sort(c.date_field(), Order::Desc)
        .window(0, Some(common.limit))
        .max_time(query_timeout);
    let docs = store.find_raw(c, &opts).await?;
    for d in docs {
        if common.json {
            writeln!(out, "{}", json_line(d))?;
        } else {
            writeln!(out, "{}", table_row(kind, &d))?;
        }
    }
    Ok(())
}
