//! Allowlists: networks never banned, fleet-wide or for one agent group.
//! They are the `allowlist` and `group_allowlist` keys of the correlation
//! rules stored in the database, edited here and stored back through the
//! service, so correlation and every replica use them at once. An entry is
//! a string, or `{ network = "…", comment = "…" }` once it has a comment
//! (why it is allowlisted); strings without a comment stay strings.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Source};
use super::policies::policy_error;
use super::ApiState;
use crate::auth::Scope;

/// One allowlisted network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AllowlistItemView {
    /// An address or a CIDR prefix, as stored.
    pub network: String,
    /// Why it is allowlisted; absent when nobody said.
    pub comment: Option<String>,
}

/// Every allowlist.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowlistsView {
    /// Never banned anywhere.
    pub global: Vec<AllowlistItemView>,
    /// Never banned for the agents of each group.
    pub groups: GroupLists,
    /// The policy version this server runs with.
    pub policy_version: u64,
}

/// One entry to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowlistEntry {
    /// An address or a CIDR prefix.
    pub network: String,
    /// An agent group; absent: fleet-wide.
    pub group: Option<String>,
    /// Why it is allowlisted (at most 200 characters).
    pub comment: Option<String>,
}

/// A new comment for an entry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowlistComment {
    /// The address or prefix, as added.
    pub network: String,
    /// An agent group; absent: the fleet-wide list.
    pub group: Option<String>,
    /// The new comment; empty removes it (at most 200 characters).
    pub comment: String,
}

/// One entry to remove.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllowlistTarget {
    /// The address or prefix, as added.
    pub network: String,
    /// An agent group; absent: the fleet-wide list.
    pub group: Option<String>,
}

/// Why the rules could not be edited.
#[derive(Debug, PartialEq, Eq)]
pub enum EditError {
    /// The request is wrong (bad network or group): 400.
    Bad(String),
    /// Already listed: 409.
    Present(String),
    /// Not listed: 404.
    Absent(String),
    /// The stored rules are not a TOML table with list-shaped allowlists.
    Stored(String),
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Bad(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
            EditError::Present(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            EditError::Absent(m) => ApiError::not_found(m),
            EditError::Stored(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        }
    }
}

fn network(text: &str) -> Result<IpNet, EditError> {
    fleetban_proto::parse_target(text.trim()).map_err(|_| {
        EditError::Bad(format!(
            "network {text:?}: expected an IP address or a CIDR prefix (such as 192.0.2.1 or 10.0.0.0/8)"
        ))
    })
}

fn group_name(g: &str) -> Result<(), EditError> {
    let ok = !g.is_empty()
        && g.len() <= 64
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EditError::Bad(format!(
            "group {g:?}: expected 1 to 64 characters among letters, digits, '-', '_' and '.'"
        )))
    }
}

fn parse(text: &str) -> Result<toml::Table, EditError> {
    toml::from_str(text).map_err(|e| EditError::Stored(format!("stored rules: {e}")))
}

/// Longest comment kept on an entry.
pub const MAX_COMMENT: usize = 200;

fn comment_text(c: &str) -> Result<Option<String>, EditError> {
    let c = c.trim();
    if c.chars().count() > MAX_COMMENT {
        return Err(EditError::Bad(format!(
            "comment: at most {MAX_COMMENT} characters"
        )));
    }
    if c.chars().any(char::is_control) {
        return Err(EditError::Bad(
            "comment: control characters (such as line breaks) are not allowed".into(),
        ));
    }
    Ok((!c.is_empty()).then(|| c.to_owned()))
}

fn item(x: &toml::Value, key: &str) -> Result<AllowlistItemView, EditError> {
    let bad = || {
        EditError::Stored(format!(
            "stored rules: {key} has an entry that is neither a string nor {{ network, comment }}"
        ))
    };
    match x {
        toml::Value::String(n) => Ok(AllowlistItemView {
            network: n.clone(),
            comment: None,
        }),
        toml::Value::Table(t) => {
            let network = t
                .get("network")
                .and_then(toml::Value::as_str)
                .ok_or_else(bad)?;
            let comment = match t.get("comment") {
                None => None,
                Some(c) => Some(c.as_str().ok_or_else(bad)?.to_owned()).filter(|c| !c.is_empty()),
            };
            Ok(AllowlistItemView {
                network: network.to_owned(),
                comment,
            })
        }
        _ => Err(bad()),
    }
}

fn items(v: Option<&toml::Value>, key: &str) -> Result<Vec<AllowlistItemView>, EditError> {
    match v {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(a)) => a.iter().map(|x| item(x, key)).collect(),
        Some(_) => Err(EditError::Stored(format!(
            "stored rules: {key} is not a list"
        ))),
    }
}

/// An entry as stored: a plain string without a comment.
fn stored_item(net: &str, comment: Option<&str>) -> toml::Value {
    match comment {
        None => toml::Value::String(net.to_owned()),
        Some(c) => {
            let mut t = toml::Table::new();
            t.insert("network".into(), toml::Value::String(net.to_owned()));
            t.insert("comment".into(), toml::Value::String(c.to_owned()));
            toml::Value::Table(t)
        }
    }
}

/// Allowlists per agent group.
pub type GroupLists = BTreeMap<String, Vec<AllowlistItemView>>;

/// The allowlists of stored rules (pure, for tests).
pub fn read(text: &str) -> Result<(Vec<AllowlistItemView>, GroupLists), EditError> {
    let table = parse(text)?;
    let policy = table.get("policy").and_then(toml::Value::as_table);
    let global = items(policy.and_then(|p| p.get("allowlist")), "policy.allowlist")?;
    let mut groups = BTreeMap::new();
    if let Some(g) = policy.and_then(|p| p.get("group_allowlist")) {
        let g = g.as_table().ok_or_else(|| {
            EditError::Stored("stored rules: policy.group_allowlist is not a table".into())
        })?;
        for (name, list) in g {
            groups.insert(
                name.clone(),
                items(Some(list), &format!("policy.group_allowlist.{name}"))?,
            );
        }
    }
    Ok((global, groups))
}

/// A change to one allowlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Add it, with an optional comment.
    Add(Option<&'a str>),
    /// Set its comment (empty: none).
    Comment(&'a str),
    Remove,
}

/// Adds, comments or removes one entry of stored rules and returns the new
/// rules text (pure, for tests). Entries compare as networks, so
/// `192.0.2.1` and `192.0.2.1/32` are the same.
pub fn edit(
    text: &str,
    network_text: &str,
    group: Option<&str>,
    change: Edit<'_>,
) -> Result<String, EditError> {
    let net = network(network_text)?;
    if let Some(g) = group {
        group_name(g)?;
    }
    let comment = match change {
        Edit::Add(Some(c)) | Edit::Comment(c) => comment_text(c)?,
        Edit::Add(None) | Edit::Remove => None,
    };
    let mut table = parse(text)?;
    let policy = table
        .entry("policy")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| EditError::Stored("stored rules: policy is not a table".into()))?;
    let (key, list) = match group {
        None => ("policy.allowlist".to_owned(), policy.entry("allowlist")),
        Some(g) => {
            let groups = policy
                .entry("group_allowlist")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    EditError::Stored("stored rules: policy.group_allowlist is not a table".into())
                })?;
            (format!("policy.group_allowlist.{g}"), groups.entry(g))
        }
    };
    let list = list
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| EditError::Stored(format!("stored rules: {key} is not a list")))?;
    let mut at = None;
    for (i, v) in list.iter().enumerate() {
        let stored = item(v, &key)?;
        if fleetban_proto::parse_target(&stored.network).is_ok_and(|n| n == net) {
            at = Some((i, stored.network));
            break;
        }
    }
    let whose = group.map_or("the fleet-wide allowlist".to_owned(), |g| {
        format!("the allowlist of group {g:?}")
    });
    match (at, change) {
        (Some(_), Edit::Add(_)) => {
            return Err(EditError::Present(format!("{net} is already in {whose}")))
        }
        (None, Edit::Remove | Edit::Comment(_)) => {
            return Err(EditError::Absent(format!("{net} is not in {whose}")))
        }
        (None, Edit::Add(_)) => list.push(stored_item(&net.to_string(), comment.as_deref())),
        (Some((i, stored)), Edit::Comment(_)) => {
            list[i] = stored_item(&stored, comment.as_deref());
        }
        (Some((i, _)), Edit::Remove) => {
            list.remove(i);
        }
    }
    if let Some(g) = group {
        let empty = policy
            .get("group_allowlist")
            .and_then(|t| t.get(g))
            .and_then(toml::Value::as_array)
            .is_some_and(Vec::is_empty);
        if empty {
            if let Some(t) = policy
                .get_mut("group_allowlist")
                .and_then(toml::Value::as_table_mut)
            {
                t.remove(g);
            }
        }
    }
    toml::to_string(&table).map_err(|e| EditError::Stored(format!("cannot write the rules: {e}")))
}

async fn view(state: &ApiState) -> ApiResult<AllowlistsView> {
    let text = state.service.fleet_rules().await?;
    let (global, groups) = read(&text)?;
    Ok(AllowlistsView {
        global,
        groups,
        policy_version: state.service.policy_version(),
    })
}

/// Every allowlist (needs `policies:read`).
#[utoipa::path(get, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = AllowlistsView), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<AllowlistsView>> {
    auth.require(Scope::PoliciesRead)?;
    Ok(Json(view(&state).await?))
}

async fn change(
    state: &ApiState,
    actor: &str,
    source: Option<std::net::IpAddr>,
    network_text: &str,
    group: Option<&str>,
    change: Edit<'_>,
) -> ApiResult<AllowlistsView> {
    let text = state.service.fleet_rules().await?;
    let new = edit(&text, network_text, group, change)?;
    let version = state
        .service
        .set_fleet_rules(&new, actor)
        .await
        .map_err(policy_error)?;
    let net = network(network_text)?;
    state
        .accounts
        .audit(
            actor,
            match change {
                Edit::Add(_) => "allowlist.add",
                Edit::Comment(_) => "allowlist.comment",
                Edit::Remove => "allowlist.remove",
            },
            &net.to_string(),
            serde_json::json!({
                "group": group,
                "version": version,
                "comment": match change {
                    Edit::Add(c) => c,
                    Edit::Comment(c) => Some(c),
                    Edit::Remove => None,
                },
            }),
            source,
        )
        .await;
    view(state).await
}

/// Add a network to the fleet-wide allowlist or a group's; correlation and
/// every replica use it at once (needs `policies:write`). Already-active
/// bans are not revoked by it.
#[utoipa::path(post, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    request_body = AllowlistEntry,
    responses((status = 201, body = AllowlistsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<AllowlistEntry>,
) -> ApiResult<(StatusCode, Json<AllowlistsView>)> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let v = change(
        &state,
        &actor,
        source,
        &req.network,
        req.group.as_deref(),
        Edit::Add(req.comment.as_deref()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Set or clear the comment of an allowlist entry (needs
/// `policies:write`).
#[utoipa::path(patch, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    request_body = AllowlistComment,
    responses((status = 200, body = AllowlistsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn comment(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<AllowlistComment>,
) -> ApiResult<Json<AllowlistsView>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let v = change(
        &state,
        &actor,
        source,
        &req.network,
        req.group.as_deref(),
        Edit::Comment(&req.comment),
    )
    .await?;
    Ok(Json(v))
}

/// Remove a network from the fleet-wide allowlist or a group's (needs
/// `policies:write`).
#[utoipa::path(delete, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    params(AllowlistTarget),
    responses((status = 200, body = AllowlistsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiQuery(q): ApiQuery<AllowlistTarget>,
) -> ApiResult<Json<AllowlistsView>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let v = change(
        &state,
        &actor,
        source,
        &q.network,
        q.group.as_deref(),
        Edit::Remove,
    )
    .await?;
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(l: &[AllowlistItemView]) -> Vec<&str> {
        l.iter().map(|i| i.network.as_str()).collect()
    }

    #[test]
    fn entries_are_added_once_and_removed() {
        let t = edit("", "10.0.0.0/8", None, Edit::Add(None)).expect("add");
        let t = edit(&t, "192.0.2.1", Some("office"), Edit::Add(None)).expect("add to group");
        let (g, groups) = read(&t).expect("read");
        assert_eq!(networks(&g), vec!["10.0.0.0/8"]);
        assert_eq!(networks(&groups["office"]), vec!["192.0.2.1/32"]);
        assert!(matches!(
            edit(&t, "192.0.2.1/32", Some("office"), Edit::Add(None)),
            Err(EditError::Present(_))
        ));
        let t = edit(&t, "192.0.2.1/32", Some("office"), Edit::Remove).expect("remove");
        assert!(read(&t).expect("read").1.is_empty());
        assert!(matches!(
            edit(&t, "10.0.0.1", None, Edit::Remove),
            Err(EditError::Absent(_))
        ));
    }

    #[test]
    fn other_rules_are_kept_and_bad_input_refused() {
        let rules = "[policy]\ngroup_scope = true\n[policy.threshold]\nhosts = 2\nwindow = \"10m\"\nbantime = \"1h\"\n";
        let t = edit(rules, "2001:db8::/32", None, Edit::Add(Some("lab"))).expect("add");
        assert!(crate::policy_config::parse_rules(&t).is_ok(), "{t}");
        assert!(
            t.contains("group_scope = true") && t.contains("hosts = 2"),
            "{t}"
        );
        assert!(matches!(
            edit(rules, "10.0.0.0/33", None, Edit::Add(None)),
            Err(EditError::Bad(_))
        ));
        assert!(matches!(
            edit(rules, "10.0.0.0/8", Some("a b"), Edit::Add(None)),
            Err(EditError::Bad(_))
        ));
    }

    #[test]
    fn comments_are_kept_edited_and_old_strings_still_load() {
        let old = "[policy]\nallowlist = [\"10.0.0.0/8\", \"192.0.2.1/32\"]\n";
        let t = edit(
            old,
            "198.51.100.0/24",
            None,
            Edit::Add(Some(" office VPN ")),
        )
        .expect("add");
        assert!(crate::policy_config::parse_rules(&t).is_ok(), "{t}");
        let t = edit(&t, "192.0.2.1", None, Edit::Comment("monitoring")).expect("comment");
        let (g, _) = read(&t).expect("read");
        let shown: Vec<(&str, Option<&str>)> = g
            .iter()
            .map(|i| (i.network.as_str(), i.comment.as_deref()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("10.0.0.0/8", None),
                ("192.0.2.1/32", Some("monitoring")),
                ("198.51.100.0/24", Some("office VPN")),
            ]
        );
        assert!(crate::policy_config::parse_rules(&t).is_ok(), "{t}");
        let t = edit(&t, "192.0.2.1", None, Edit::Comment("")).expect("clear");
        assert_eq!(read(&t).expect("read").0[1].comment, None);
        assert!(
            t.contains("\"192.0.2.1/32\""),
            "back to a plain string: {t}"
        );
        let t = edit(&t, "198.51.100.0/24", None, Edit::Remove).expect("remove commented");
        assert_eq!(read(&t).expect("read").0.len(), 2);
        assert!(matches!(
            edit(&t, "203.0.113.1", None, Edit::Comment("x")),
            Err(EditError::Absent(_))
        ));
        assert!(matches!(
            edit(&t, "203.0.113.1", None, Edit::Add(Some(&"x".repeat(201)))),
            Err(EditError::Bad(_))
        ));
        assert!(matches!(
            edit(&t, "203.0.113.1", None, Edit::Add(Some("a\nb"))),
            Err(EditError::Bad(_))
        ));
        let solo = edit("", "10.0.0.0/8", Some("lab"), Edit::Add(Some("x"))).expect("only");
        assert!(crate::policy_config::parse_rules(&solo).is_ok(), "{solo}");
        assert_eq!(
            read(&solo).expect("read").1["lab"][0].comment.as_deref(),
            Some("x")
        );
        assert!(matches!(
            read("[policy]\nallowlist = [1]\n"),
            Err(EditError::Stored(_))
        ));
    }
}
