//! The admin command line both servers share: `member list|add|remove` and
//! `leader transfer [ID]`, over the HTTP routes of [`crate::members`]. Requests go to the
//! first endpoint that answers and follow redirects to the leader; a change is never
//! retried once it may have reached a node (a 504 or a broken connection is reported as
//! an unknown outcome: check with `member list`).

use std::time::{Duration, Instant};

use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `member ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum MemberCmd {
    /// Show the members: role, addresses and, from the leader, replication progress.
    List {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a node: as a learner, then, once it has caught up, as a voter. Start the node
    /// first, with an empty data directory and no --peers (or with --join).
    Add {
        /// The new node's id (never one that was removed before).
        id: String,
        /// Its peer (gRPC) address.
        #[arg(
            value_name = "PEER_ADDRESS",
            required_unless_present = "peer_address_flag"
        )]
        peer_address: Option<String>,
        /// Its client address, which redirects will name.
        #[arg(value_name = "CLIENT_ADDRESS")]
        client_address: Option<String>,
        /// Its peer address (same as the positional argument).
        #[arg(
            long = "peer-address",
            value_name = "HOST:PORT",
            conflicts_with = "peer_address"
        )]
        peer_address_flag: Option<String>,
        /// Its client address (same as the positional argument).
        #[arg(
            long = "client-address",
            value_name = "HOST:PORT",
            conflicts_with = "client_address"
        )]
        client_address_flag: Option<String>,
        /// Leave it a learner: it receives the log but does not vote.
        #[arg(long, visible_alias = "no-promote")]
        learner: bool,
        /// Longest wait for it to catch up before promotion, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        catch_up_ms: u64,
    },
    /// Remove a member (voter or learner). Its id can never be used again.
    Remove {
        /// The member's id.
        id: String,
        /// Proceed even if the voters left would not have a reachable quorum.
        #[arg(long)]
        force: bool,
    },
}

/// `leader ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum LeaderCmd {
    /// Hand leadership to voter ID, or to the most up-to-date voter if none is named.
    Transfer {
        /// The voter to lead next.
        id: Option<String>,
    },
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No endpoint answered before the deadline; nothing changed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server refused the request; nothing changed.
    #[error("refused (HTTP {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The request may or may not have taken effect.
    #[error("outcome unknown: {0} (check with `member list`)")]
    Unknown(String),
}

/// Normalizes `host:port` to `http://host:port`.
pub fn endpoint_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// An admin client over a cluster's client endpoints.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
    deadline: Duration,
}

impl AdminClient {
    /// A client of `endpoints` whose operations keep trying (unreachable endpoints,
    /// 503s, redirects) for `deadline`.
    pub fn new(endpoints: &[String], deadline: Duration) -> Result<Self, AdminError> {
        if endpoints.is_empty() {
            return Err(AdminError::Unavailable("no endpoints given".into()));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| AdminError::Unavailable(format!("building the HTTP client: {e}")))?;
        Ok(AdminClient {
            http,
            endpoints: endpoints.iter().map(|e| endpoint_url(e)).collect(),
            deadline,
        })
    }

    /// `method path` with a JSON `body`: on the first endpoint that answers, following
    /// redirects; 503s and unreachable endpoints are retried until the deadline. `wait`
    /// bounds one request (a change waits for its commit and the catch-up).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        wait: Duration,
    ) -> Result<Value, AdminError> {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        let mut attempt = 0usize;
        let mut redirected: Option<String> = None;
        while start.elapsed() < self.deadline {
            let url = match redirected.take() {
                Some(url) => url,
                None => {
                    let base = &self.endpoints[attempt % self.endpoints.len()];
                    attempt += 1;
                    format!("{base}{path}")
                }
            };
            let mut req = self.http.request(method.clone(), &url).timeout(wait);
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = match req.send().await {
                Err(e) if e.is_connect() => {
                    last = format!("{url}: {e}");
                    if attempt.is_multiple_of(self.endpoints.len()) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
                Err(e) if method == Method::GET => {
                    last = format!("{url}: {e}");
                    continue;
                }
                Err(e) => return Err(AdminError::Unknown(format!("{url}: {e}"))),
                Ok(r) => r,
            };
            let status = resp.status();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = resp
                .text()
                .await
                .map_err(|e| AdminError::Unknown(format!("{url}: reading the answer: {e}")))?;
            let value: Value = serde_json::from_str(&text).unwrap_or(json!({ "error": text }));
            let message = || {
                value["error"]
                    .as_str()
                    .map_or_else(|| text.clone(), str::to_owned)
            };
            match status {
                s if s.is_success() => return Ok(value),
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => match location {
                    Some(l) => redirected = Some(l),
                    None => last = format!("{url}: redirect without a location"),
                },
                StatusCode::SERVICE_UNAVAILABLE => {
                    last = format!("{url}: {}", message());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                StatusCode::GATEWAY_TIMEOUT => return Err(AdminError::Unknown(message())),
                s => {
                    return Err(AdminError::Refused {
                        status: s.as_u16(),
                        message: message(),
                    })
                }
            }
        }
        Err(AdminError::Unavailable(last))
    }

    /// Runs a `member` command; returns what to print.
    pub async fn member(&self, cmd: MemberCmd) -> Result<String, AdminError> {
        match cmd {
            MemberCmd::List { json } => {
                let v = self
                    .request(Method::GET, "/v1/members", None, Duration::from_secs(5))
                    .await?;
                Ok(if json {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                } else {
                    members_table(&v)
                })
            }
            MemberCmd::Add {
                id,
                peer_address,
                client_address,
                peer_address_flag,
                client_address_flag,
                learner,
                catch_up_ms,
            } => {
                let peer = peer_address.or(peer_address_flag).unwrap_or_default();
                let client = client_address.or(client_address_flag);
                let body = json!({ "id": id, "peer_address": peer, "client_address": client });
                let path = format!("/v1/members?promote={}&timeout_ms={catch_up_ms}", !learner);
                let wait = Duration::from_millis(catch_up_ms) + Duration::from_secs(30);
                let v = self.request(Method::POST, &path, Some(body), wait).await?;
                let role = if learner { "learner" } else { "voter" };
                Ok(format!("added {id} as a {role}\n{}", members_table(&v)))
            }
            MemberCmd::Remove { id, force } => {
                let path = format!("/v1/members/{id}{}", if force { "?force=true" } else { "" });
                let v = self
                    .request(Method::DELETE, &path, None, Duration::from_secs(30))
                    .await?;
                Ok(format!("removed {id}\n{}", members_table(&v)))
            }
        }
    }

    /// Runs a `leader` command; returns what to print.
    pub async fn leader(&self, cmd: LeaderCmd) -> Result<String, AdminError> {
        match cmd {
            LeaderCmd::Transfer { id } => {
                let body = json!({ "to": id.unwrap_or_default() });
                let v = self
                    .request(
                        Method::POST,
                        "/v1/leader/transfer",
                        Some(body),
                        Duration::from_secs(30),
                    )
                    .await?;
                Ok(format!(
                    "leader is now {} (took {} ms)",
                    v["leader"].as_str().unwrap_or("?"),
                    v["took_ms"].as_u64().unwrap_or(0)
                ))
            }
        }
    }
}

/// A `GET /v1/members` answer as an aligned table.
pub fn members_table(v: &Value) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "ROLE".into(),
        "PEER".into(),
        "CLIENT".into(),
        "MATCH".into(),
        "LAG".into(),
        "ACTIVE".into(),
    ]];
    for m in v["members"].as_array().into_iter().flatten() {
        let text = |k: &str| m[k].as_str().unwrap_or("-").to_string();
        let num = |k: &str| m[k].as_u64().map_or("-".to_string(), |n| n.to_string());
        let mut role = text("role");
        if m["leader"].as_bool() == Some(true) {
            role.push_str(" (leader)");
        }
        rows.push([
            text("id"),
            role,
            text("peer_address"),
            text("client_address"),
            num("match_index"),
            num("lag"),
            m["active"]
                .as_bool()
                .map_or("-".to_string(), |a| a.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let retired = v["retired"].as_array().map_or(0, Vec::len);
    out.push_str(&format!(
        "term {}, configuration at index {}{}{}",
        v["term"],
        v["membership_index"],
        if v["committed"].as_bool() == Some(false) {
            " (not committed yet)"
        } else {
            ""
        },
        if retired > 0 {
            format!(", {retired} retired id(s)")
        } else {
            String::new()
        }
    ));
    out
}
