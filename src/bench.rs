//! Benchmarks, each printed beside a baseline measured in the same run on the same machine.
//! Not tests: figures depend on the machine, and a missed aim is reported, not failed (events
//! lost by `bench webhooks` are).
//!
//! `muster bench cascade`: how long planning and publishing a province-wide cascade takes.
//!
//! The demo directory (河北省 with N generated enterprises) is loaded into a fresh SQLite
//! database in a temporary folder and, with a PostgreSQL URL, into a fresh database created on
//! that server; both are removed at the end. Then, per backend:
//!
//! - **plan**: `cascade::plan` of the industry-and-trade cascade from the province, on the
//!   directory loaded once (`--runs` times; median and minimum);
//! - **plan+persist**: `plan` followed by `Store::publish_dispatch` (dispatch, meetings,
//!   invitations, audit event and jobs in one transaction), a new dispatch each run;
//! - **floor**: the same dispatch, meetings and invitations rows written in one transaction
//!   with batched multi-row INSERTs and nothing else — no planning, no audit, no jobs. The
//!   ratio plan+persist / floor is what the aim (at most 2x) is about.
//!
//! `muster bench webhooks`: how fast `POST /livekit/webhook` takes LiveKit's participant events
//! for one 20,000-invitee meeting, beside a floor that only verifies and parses them, and
//! whether every event ended up in the ledger. See [`webhooks`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use sqlx::{Connection, QueryBuilder};

use crate::directory::load_demo;
use crate::domain::agenda::{AgendaTemplate, TemplateSet};
use crate::domain::cascade::{Directory, Plan, PlanRequest, plan};
use crate::store::{PublishDispatch, Store, StoreResult, room_name, with_db, with_tx};

const TEMPLATE: &str = "industry-trade-resumption";
/// 河北省, the root of the demo directory.
const ROOT_CODE: &str = "130000";
/// Rows per multi-row INSERT in the floor (as `publish_dispatch` does for invitations).
const BATCH_ROWS: usize = 1000;
const PLAN_AIM_MS: f64 = 200.0;
const RATIO_AIM: f64 = 2.0;
const ACTOR: &str = "bench";

#[derive(Debug, Clone)]
pub struct CascadeOptions {
    /// Generated enterprises in the demo directory.
    pub enterprises: usize,
    /// A PostgreSQL server to create a throwaway database on (any database of it in the URL).
    pub postgres: Option<String>,
    /// Timed runs of each measurement.
    pub runs: usize,
}

/// Runs the cascade benchmark and prints its table to standard output (progress goes to
/// standard error).
pub async fn cascade(opts: &CascadeOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.runs > 0, "--runs must be at least 1");
    let agendas = Path::new("agendas");
    let templates = crate::agendas::load_dir(agendas)
        .or_else(|_| crate::agendas::load(agendas, true))
        .context("loading agenda templates")?;
    let template = templates
        .get(TEMPLATE)
        .with_context(|| format!("no agenda template {TEMPLATE}"))?;
    let start = tomorrow_nine(Utc::now());

    let outcome = with_scratch(opts.postgres.as_deref(), async |scratch, pg| {
        run(opts, template, start, scratch, pg).await
    })
    .await;
    print!("{}", outcome?.table(opts));
    Ok(())
}

/// Runs `body` with a scratch SQLite folder and, when a PostgreSQL URL is given, a scratch
/// database on that server; both are removed afterwards, whatever `body` returned.
pub(crate) async fn with_scratch<T>(
    postgres: Option<&str>,
    body: impl AsyncFnOnce(&ScratchDir, Option<&PgScratch>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let scratch = ScratchDir::create()?;
    let pg = match postgres {
        Some(url) => Some(PgScratch::create(url).await?),
        None => None,
    };
    let outcome = body(&scratch, pg.as_ref()).await;
    if let Some(pg) = &pg
        && let Err(e) = pg.drop_database().await
    {
        eprintln!(
            "warning: could not drop the benchmark database {}: {e:#}",
            pg.name
        );
    }
    drop(scratch);
    outcome
}

/// 09:00 tomorrow in Shanghai.
fn tomorrow_nine(now: DateTime<Utc>) -> DateTime<Utc> {
    let tz = chrono_tz::Asia::Shanghai;
    let day = now
        .with_timezone(&tz)
        .date_naive()
        .succ_opt()
        .expect("date in range");
    tz.from_local_datetime(&day.and_hms_opt(9, 0, 0).expect("valid time"))
        .earliest()
        .expect("09:00 exists in Shanghai")
        .with_timezone(&Utc)
}

/// A temporary folder for the SQLite database, removed when dropped.
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl ScratchDir {
    pub(crate) fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "muster-bench-{}-{}",
            std::process::id(),
            &crate::auth::new_token()[..8]
        ));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    pub(crate) fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("bench.db").display())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway database on a PostgreSQL server. Messages never repeat the URL, which may
/// hold a password.
pub(crate) struct PgScratch {
    pub(crate) admin_url: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl PgScratch {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("muster_bench_{}", &crate::auth::new_token()[..12]);
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .context("cannot connect to the PostgreSQL server given by --postgres")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        admin.close().await?;
        Ok(Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
        })
    }

    pub(crate) async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// Replaces the database name of a PostgreSQL URL, keeping its query string.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// What one run of the benchmark measured.
struct Report {
    root_name: String,
    units: usize,
    people: usize,
    meetings: usize,
    invitations: usize,
    plan: Vec<Duration>,
    backends: Vec<BackendReport>,
}

struct BackendReport {
    name: &'static str,
    demo_load: Duration,
    directory_load: Duration,
    floor: Vec<Duration>,
    persist: Vec<Duration>,
    plan_persist: Vec<Duration>,
}

async fn run(
    opts: &CascadeOptions,
    template: &AgendaTemplate,
    start: DateTime<Utc>,
    scratch: &ScratchDir,
    pg: Option<&PgScratch>,
) -> anyhow::Result<Report> {
    let mut targets = vec![("sqlite", scratch.url())];
    if let Some(pg) = pg {
        targets.push(("postgres", pg.url.clone()));
    }
    let mut report: Option<Report> = None;
    for (name, url) in targets {
        let store = Store::connect(&url, 10)
            .await
            .with_context(|| format!("opening the {name} database"))?;
        store.migrate().await?;
        let loaded = Loaded::new(store, opts.enterprises, name).await?;
        let request = PlanRequest {
            template,
            root_unit_id: loaded.root_id,
            start,
            chosen: &[],
        };
        let reference = plan(&request, &loaded.dir)?;
        anyhow::ensure!(
            !reference.meetings.is_empty(),
            "the plan has no meetings: nobody to invite"
        );
        let report = report.get_or_insert_with(|| Report {
            root_name: loaded
                .dir
                .unit(loaded.root_id)
                .map_or_else(|| ROOT_CODE.to_string(), |u| u.name.clone()),
            units: loaded.units,
            people: loaded.people,
            meetings: reference.meetings.len(),
            invitations: reference.invitation_count(),
            plan: Vec::new(),
            backends: Vec::new(),
        });
        if report.plan.is_empty() {
            // Planning is pure and the directory is the same on either backend: time it once.
            eprintln!("planning {} times…", opts.runs);
            for _ in 0..opts.runs {
                let t = Instant::now();
                let p = plan(&request, &loaded.dir)?;
                report.plan.push(t.elapsed());
                drop(p);
            }
        }
        eprintln!("{name}: floor and plan+persist, {} runs each…", opts.runs);
        let persisted = persist_runs(&loaded, &request, &reference, opts.runs).await?;
        loaded.store.close().await;
        report.backends.push(BackendReport {
            name,
            demo_load: loaded.demo_load,
            directory_load: loaded.directory_load,
            floor: persisted.floor,
            persist: persisted.persist,
            plan_persist: persisted.plan_persist,
        });
    }
    report.context("no backend was measured")
}

/// A store with the demo directory, and that directory in memory.
struct Loaded {
    store: Store,
    dir: Directory,
    root_id: i64,
    units: usize,
    people: usize,
    demo_load: Duration,
    directory_load: Duration,
}

impl Loaded {
    async fn new(store: Store, enterprises: usize, name: &str) -> anyhow::Result<Self> {
        eprintln!("{name}: loading the demo directory ({enterprises} enterprises)…");
        let t = Instant::now();
        anyhow::ensure!(
            load_demo(&store, enterprises).await?,
            "the fresh {name} database already has a directory"
        );
        let demo_load = t.elapsed();
        let t = Instant::now();
        let (units, people) = store.directory_snapshot().await?;
        let (unit_count, person_count) = (units.len(), people.len());
        let dir = Directory::new(units, people);
        let directory_load = t.elapsed();
        let root_id = store.unit_by_code(ROOT_CODE).await?.id;
        Ok(Self {
            store,
            dir,
            root_id,
            units: unit_count,
            people: person_count,
            demo_load,
            directory_load,
        })
    }
}

struct Persisted {
    floor: Vec<Duration>,
    persist: Vec<Duration>,
    plan_persist: Vec<Duration>,
}

/// Alternates floor and plan+persist runs (floor first on even runs, second on odd ones) so
/// that the tables, which grow by one dispatch per run, weigh on both alike.
async fn persist_runs(
    loaded: &Loaded,
    request: &PlanRequest<'_>,
    reference: &Plan,
    runs: usize,
) -> anyhow::Result<Persisted> {
    let mut out = Persisted {
        floor: Vec::new(),
        persist: Vec::new(),
        plan_persist: Vec::new(),
    };
    // The plan report is serialised outside the floor's clock: the floor is database writes
    // only, while `publish_dispatch` builds its report (and audit event and jobs) inside.
    let report = serde_json::json!({
        "skipped": reference.skipped,
        "double_bookings": reference.double_bookings,
        "warnings": reference.warnings,
    })
    .to_string();
    let rows = FloorRows {
        plan: reference,
        planned_start: request.start,
        template_source: &request.template.source,
        report: &report,
    };
    // As `dispatch::publish` passes them: reminder jobs are part of what publishing writes.
    let schedule =
        crate::dispatch::job_schedule(request.template, &crate::config::Config::default().livekit);
    let (mut floor_id, mut published_id) = (0, 0);
    for run in 0..runs {
        for floor_turn in [run.is_multiple_of(2), !run.is_multiple_of(2)] {
            if floor_turn {
                let t = Instant::now();
                floor_id = insert_floor(&loaded.store, &rows).await?;
                out.floor.push(t.elapsed());
            } else {
                let t = Instant::now();
                let p = plan(request, &loaded.dir)?;
                let planned = t.elapsed();
                published_id = loaded
                    .store
                    .publish_dispatch(&PublishDispatch {
                        plan: &p,
                        schedule: &schedule,
                        planned_start: request.start,
                        template_source: &request.template.source,
                        chosen: request.chosen,
                        actor: ACTOR,
                    })
                    .await?;
                let total = t.elapsed();
                out.plan_persist.push(total);
                out.persist.push(total - planned);
                drop(p);
            }
        }
    }
    // Both wrote the same number of rows, or the comparison means nothing.
    let expected = (
        reference.meetings.len() as i64,
        reference.invitation_count() as i64,
    );
    for (what, id) in [("floor", floor_id), ("publish", published_id)] {
        let written = written_rows(&loaded.store, id).await?;
        anyhow::ensure!(
            written == expected,
            "{what} wrote {written:?} (meetings, invitations); the plan has {expected:?}"
        );
    }
    Ok(out)
}

/// The rows the floor writes, prepared outside its clock.
struct FloorRows<'a> {
    plan: &'a Plan,
    planned_start: DateTime<Utc>,
    template_source: &'a str,
    report: &'a str,
}

/// The floor: one dispatches row, the meetings rows and the invitations rows of the plan in
/// one transaction, with multi-row INSERTs of up to [`BATCH_ROWS`] rows, and nothing else.
///
/// Meetings go in one multi-row INSERT per depth of the meeting tree (three for this
/// template: the provincial call, the cities' meetings, the districts' meetings), each
/// `RETURNING` the new ids, so that `parent_id` is filled in as `publish_dispatch` fills it.
/// Returned rows are matched to planned meetings by (tier index, host unit), which is unique
/// within a plan, rather than by the order `RETURNING` happens to give.
async fn insert_floor(store: &Store, rows: &FloorRows<'_>) -> anyhow::Result<i64> {
    let plan = rows.plan;
    let now = Utc::now();
    let mut tx = store.begin().await?;
    let dispatch_id: i64 = with_tx!(&mut tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO dispatches (template_id, title, sector, root_unit_id, timezone, planned_start, \
             status, template_source, chosen_units, plan_report, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, '', $8, $9, $10, $10) RETURNING id",
        )
        .bind(&plan.template_id)
        .bind(&plan.title)
        .bind(plan.sector.map(|s| s.as_str()))
        .bind(plan.root_unit_id)
        .bind(plan.timezone.name())
        .bind(rows.planned_start)
        .bind(rows.template_source)
        .bind(rows.report)
        .bind(ACTOR)
        .bind(now)
        .fetch_one(conn)
        .await?
    });

    let n = plan.meetings.len();
    let mut depth = vec![0usize; n];
    for (i, m) in plan.meetings.iter().enumerate() {
        if let Some(p) = m.parent {
            anyhow::ensure!(p < i, "meeting {i} comes before its parent {p}");
            depth[i] = depth[p] + 1;
        }
    }
    let mut ids = vec![0i64; n];
    for d in 0..=depth.iter().copied().max().unwrap_or(0) {
        let level: Vec<usize> = (0..n).filter(|&i| depth[i] == d).collect();
        for chunk in level.chunks(BATCH_ROWS) {
            let key = |i: usize| (plan.meetings[i].tier as i64, plan.meetings[i].host_unit_id);
            let position: HashMap<(i64, i64), usize> = chunk.iter().map(|&i| (key(i), i)).collect();
            anyhow::ensure!(
                position.len() == chunk.len(),
                "two meetings of one tier share a host; the floor cannot match their ids"
            );
            let returned: Vec<(i64, i64, i64)> = with_tx!(&mut tx, |conn| {
                let mut q = QueryBuilder::<Backend>::new(
                    "INSERT INTO meetings (dispatch_id, parent_id, tier, tier_index, host_unit_id, title, \
                     joins_parent, room_name, planned_start, planned_end, status, record, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut row, &i| {
                    let m = &plan.meetings[i];
                    row.push_bind(dispatch_id)
                        .push_bind(m.parent.map(|p| ids[p]))
                        .push_bind(m.tier_id.as_str())
                        .push_bind(m.tier as i64)
                        .push_bind(m.host_unit_id)
                        .push_bind(m.title.as_str())
                        .push_bind(m.joins_parent)
                        .push_bind(room_name(dispatch_id, plan.room_owner(i)))
                        .push_bind(m.starts_at)
                        .push_bind(m.ends_at)
                        .push("'scheduled'")
                        .push_bind(m.record)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" RETURNING id, tier_index, host_unit_id");
                q.build_query_as().fetch_all(conn).await?
            });
            anyhow::ensure!(
                returned.len() == chunk.len(),
                "inserted {} meetings, got {} ids back",
                chunk.len(),
                returned.len()
            );
            for (id, tier, host) in returned {
                let i = position
                    .get(&(tier, host))
                    .with_context(|| format!("unexpected meeting ({tier}, {host}) returned"))?;
                ids[*i] = id;
            }
        }
    }

    let invitations: Vec<(i64, &crate::domain::cascade::PlannedInvitation)> = plan
        .meetings
        .iter()
        .zip(&ids)
        .flat_map(|(m, id)| m.invitations.iter().map(move |i| (*id, i)))
        .collect();
    for chunk in invitations.chunks(BATCH_ROWS) {
        with_tx!(&mut tx, |conn| {
            let mut q = QueryBuilder::<Backend>::new(
                "INSERT INTO invitations (meeting_id, unit_id, person_id, role, can_publish, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut row, (meeting_id, i)| {
                row.push_bind(*meeting_id)
                    .push_bind(i.unit_id)
                    .push_bind(i.person_id)
                    .push_bind(i.role.as_str())
                    .push_bind(i.can_publish)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.build().execute(conn).await?;
        });
    }
    tx.commit().await?;
    Ok(dispatch_id)
}

/// Meetings and invitations stored for a dispatch.
async fn written_rows(store: &Store, dispatch_id: i64) -> StoreResult<(i64, i64)> {
    with_db!(&store.db, |pool| {
        let meetings: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM meetings WHERE dispatch_id = $1")
                .bind(dispatch_id)
                .fetch_one(pool)
                .await?;
        let invitations: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM invitations i JOIN meetings m ON m.id = i.meeting_id \
             WHERE m.dispatch_id = $1",
        )
        .bind(dispatch_id)
        .fetch_one(pool)
        .await?;
        Ok((meetings, invitations))
    })
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    }
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "ok" } else { "missed" }
}

impl Report {
    fn table(&self, opts: &CascadeOptions) -> String {
        use std::fmt::Write;
        let runs = opts.runs;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cascade benchmark: {TEMPLATE}, {}, {} enterprises, {} people, {} units",
            self.root_name, opts.enterprises, self.people, self.units
        );
        let _ = writeln!(
            out,
            "plan: {} meetings, {} invitations; times are medians of {runs} run(s)",
            self.meetings, self.invitations
        );
        for b in &self.backends {
            for (what, d) in [
                ("demo load", b.demo_load),
                ("directory load", b.directory_load),
            ] {
                let label = format!("{what} ({})", b.name);
                let _ = writeln!(out, "{label:<28}{:>9.1} ms", ms(d));
            }
        }
        let plan_ms = ms(median(&self.plan));
        let plan_min = ms(self.plan.iter().min().copied().unwrap_or_default());
        let _ = writeln!(
            out,
            "{:<28}{plan_ms:>9.1} ms   min {plan_min:.1} ms   aim < {PLAN_AIM_MS:.0} ms   {}",
            format!("plan (median of {runs})"),
            verdict(plan_ms < PLAN_AIM_MS)
        );
        for b in &self.backends {
            let floor = ms(median(&b.floor));
            let total = ms(median(&b.plan_persist));
            let ratio = total / floor;
            let _ = writeln!(
                out,
                "{:<9}floor {floor:>8.1} ms   plan+persist {total:>8.1} ms   ratio {ratio:.2}x   \
                 aim <= {RATIO_AIM:.0}x   {}   (publish_dispatch alone {:.1} ms)",
                b.name,
                verdict(ratio <= RATIO_AIM),
                ms(median(&b.persist)),
            );
        }
        out
    }
}

// ---- `muster bench webhooks` ----

/// Enterprises in the demo directory: each has a principal and a safety head, so the
/// province-wide call below invites 20,000 of them (and its host).
const WEBHOOK_ENTERPRISES: usize = 10_000;
/// One tier: the province hosts and invites the principal and the safety head of every
/// enterprise, whatever its sector, into one room.
const WEBHOOK_TEMPLATE: &str = r#"
id = "bench-webhooks"
title = "全省企业安全生产视频调度会（基准）"
timezone = "Asia/Shanghai"

[[tiers]]
host = "province"
duration = "2h"
invite = [{ level = "enterprise", sector = "any", roles = ["principal", "safety_head"] }]
"#;
const WEBHOOK_KEY: &str = "benchkey";
const WEBHOOK_SECRET: &str = "muster-bench-webhook-secret";
/// LiveKit signs each webhook with a token valid this long.
const WEBHOOK_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// muster should take at least this share of the floor's events per second (on SQLite).
const WEBHOOK_RATIO_AIM: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct WebhooksOptions {
    /// Participant connections; each is a `participant_joined` and a `participant_left`.
    pub connections: usize,
    /// Client tasks posting at the same time.
    pub concurrency: usize,
    /// A PostgreSQL server to create a throwaway database on (any database of it in the URL).
    pub postgres: Option<String>,
}

/// `muster bench webhooks`: LiveKit's participant events for one province-wide meeting posted
/// to muster over loopback, and the same load posted to a floor, per backend.
///
/// Setup, untimed: a fresh database (SQLite in a temporary folder; PostgreSQL too when given)
/// with the demo directory of [`WEBHOOK_ENTERPRISES`] enterprises and one dispatch published
/// from [`WEBHOOK_TEMPLATE`]: one meeting, one room, about 20,000 invitations. Every
/// invitation connects two or three times (`--connections` in all, unique participant sids,
/// identity = the invitation id, as muster's join tokens set it); each connection is a
/// `participant_joined` and a `participant_left` event, serialised as LiveKit does (protobuf
/// JSON of `WebhookEvent`) and signed as LiveKit does (a JWT whose `sha256` claim is the
/// body's hash, valid 5 minutes) — signing happens before each timed phase, so tokens are
/// fresh. A `room_started` goes first, on its own and untimed.
///
/// Timed: `--concurrency` client tasks (default 1: LiveKit posts a room's events one at a
/// time) post the events, each its share in time order (a
/// connection's joined before its left, both from the same task), over keep-alive HTTP/1.1
/// connections, recording each request's latency. First to the **floor** — an axum server
/// in this process whose handler only verifies the signature and parses the body, as
/// muster's handler does first — then to **muster** itself (`Application` on 127.0.0.1:0,
/// job workers off). Client, servers and database share the machine, as they would share a
/// small server.
///
/// Accounted for, afterwards: every response was 200, `webhook_events` holds every event
/// sent, and the ledger has every connection with its invitation, join and leave. Anything
/// missing fails the command.
pub async fn webhooks(opts: &WebhooksOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(opts.connections > 0, "--connections must be at least 1");
    let outcome = with_scratch(opts.postgres.as_deref(), async |scratch, pg| {
        run_webhooks(opts, scratch, pg).await
    })
    .await;
    let report = outcome?;
    print!("{}", report.table(opts));
    let lost: Vec<String> = report
        .backends
        .iter()
        .flat_map(|b| {
            b.problems()
                .into_iter()
                .map(move |p| format!("{}: {p}", b.name))
        })
        .collect();
    anyhow::ensure!(
        lost.is_empty(),
        "events unaccounted for:\n  {}",
        lost.join("\n  ")
    );
    Ok(())
}

struct WebhookReport {
    backends: Vec<WebhookBackend>,
}

struct WebhookBackend {
    name: &'static str,
    room: String,
    invitations: usize,
    /// Demo directory and dispatch.
    setup: Duration,
    /// Serialising and signing (the latter once per phase).
    generate: Duration,
    sign: Duration,
    /// Requests posted to each server: the participant events and `room_started`.
    sent: usize,
    connections: usize,
    floor: LoadResult,
    /// Events the floor verified and parsed.
    floor_verified: usize,
    muster: LoadResult,
    ledger: Ledger,
}

/// What one timed phase saw from the client side.
struct LoadResult {
    wall: Duration,
    /// Latency of every request, sorted.
    latencies: Vec<Duration>,
    /// Responses other than 200 (status 0: no response), with one example body each.
    failures: BTreeMap<u16, (usize, String)>,
}

impl LoadResult {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn not_ok(&self) -> usize {
        self.failures.values().map(|(n, _)| n).sum()
    }
}

/// What muster's database holds after the load.
struct Ledger {
    webhook_events: i64,
    connections: usize,
    /// Connections with their invitation, join time and leave time exactly as sent.
    complete: usize,
    /// A few connections that are not, described.
    examples: Vec<String>,
}

impl WebhookBackend {
    /// What is unaccounted for; empty when every event is.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (who, load) in [("floor", &self.floor), ("muster", &self.muster)] {
            for (status, (n, body)) in &load.failures {
                out.push(format!("{who}: {n} response(s) {status}, e.g. {body:?}"));
            }
        }
        if self.floor_verified != self.sent {
            out.push(format!(
                "the floor verified {} of {} events",
                self.floor_verified, self.sent
            ));
        }
        if self.ledger.webhook_events != self.sent as i64 {
            out.push(format!(
                "webhook_events has {} rows for {} events sent",
                self.ledger.webhook_events, self.sent
            ));
        }
        let expected = self.connections;
        if self.ledger.connections != expected || self.ledger.complete != expected {
            out.push(format!(
                "the ledger has {} connections, {} complete, of {expected}; e.g. {}",
                self.ledger.connections,
                self.ledger.complete,
                self.ledger.examples.join("; ")
            ));
        }
        out
    }
}

async fn run_webhooks(
    opts: &WebhooksOptions,
    scratch: &ScratchDir,
    pg: Option<&PgScratch>,
) -> anyhow::Result<WebhookReport> {
    let mut targets = vec![("sqlite", scratch.url())];
    if let Some(pg) = pg {
        targets.push(("postgres", pg.url.clone()));
    }
    let mut backends = Vec::new();
    for (name, url) in targets {
        // As `muster serve` opens it with the default configuration.
        let store = Store::connect(
            &url,
            crate::config::Config::default().database.max_connections,
        )
        .await
        .with_context(|| format!("opening the {name} database"))?;
        store.migrate().await?;
        backends.push(webhooks_on(opts, name, store).await?);
    }
    Ok(WebhookReport { backends })
}

async fn webhooks_on(
    opts: &WebhooksOptions,
    name: &'static str,
    store: Store,
) -> anyhow::Result<WebhookBackend> {
    eprintln!(
        "{name}: loading the demo directory ({WEBHOOK_ENTERPRISES} enterprises) and publishing the meeting…"
    );
    let t = Instant::now();
    let meeting = publish_webhook_meeting(&store).await?;
    let setup = t.elapsed();

    eprintln!(
        "{name}: {} invitations in room {}; generating {} events…",
        meeting.invitations.len(),
        meeting.room,
        2 * opts.connections + 1
    );
    let t = Instant::now();
    let load = WebhookLoad::generate(&meeting, opts.connections, opts.concurrency)?;
    let generate = t.elapsed();
    let client = LoopbackClient::new(opts.concurrency);

    // The floor.
    let t = Instant::now();
    let signed = load.sign()?;
    let mut sign = t.elapsed();
    let verified = Arc::new(AtomicUsize::new(0));
    let floor_server = FloorServer::start(Arc::clone(&verified)).await?;
    eprintln!("{name}: posting to the floor at {}…", floor_server.addr);
    let floor = client.post_all(floor_server.addr, &load, &signed).await?;
    floor_server.stop().await?;
    let floor_verified = verified.load(Ordering::Relaxed);

    // muster.
    let t = Instant::now();
    let signed = load.sign()?;
    sign += t.elapsed();
    let mut config = crate::config::Config {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        ..Default::default()
    };
    config.jobs.enabled = false;
    config.livekit.api_key = WEBHOOK_KEY.into();
    config.livekit.api_secret = crate::config::Secret::new(WEBHOOK_SECRET);
    let app = crate::startup::Application::build(config, store.clone()).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    eprintln!("{name}: posting to muster at {addr}…");
    let muster = client.post_all(addr, &load, &signed).await;
    // Count while muster still runs: it closes the pool (which `store` shares) when it stops.
    let ledger = match &muster {
        Ok(_) => Some(read_ledger(&store, &load).await),
        Err(_) => None,
    };
    let _ = stop.send(());
    server.await.context("muster panicked")??;
    let muster = muster?;
    let ledger = ledger.expect("read after a load")?;

    Ok(WebhookBackend {
        name,
        room: meeting.room,
        invitations: meeting.invitations.len(),
        setup,
        generate,
        sign,
        sent: load.events.len() + 1,
        connections: load.connections.len(),
        floor,
        floor_verified,
        muster,
        ledger,
    })
}

/// The benchmark's meeting as published: its room and its invitations.
struct WebhookMeeting {
    room: String,
    invitations: Vec<i64>,
}

async fn publish_webhook_meeting(store: &Store) -> anyhow::Result<WebhookMeeting> {
    anyhow::ensure!(
        load_demo(store, WEBHOOK_ENTERPRISES).await?,
        "the fresh database already has a directory"
    );
    let templates = TemplateSet::parse(&[(
        "bench-webhooks.toml".to_string(),
        WEBHOOK_TEMPLATE.to_string(),
    )])
    .map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the benchmark's template is invalid: {}", text.join("; "))
    })?;
    let principal = crate::domain::access::Principal {
        account_id: 0,
        username: ACTOR.into(),
        role: crate::domain::access::StaffRole::Admin,
        unit_id: 0,
        unit_name: "(all units)".into(),
        unit_path: "/".into(),
    };
    let now = Utc::now();
    let input = crate::dispatch::DispatchInput {
        template: "bench-webhooks".into(),
        root_unit: ROOT_CODE.into(),
        start: tomorrow_nine(now).to_rfc3339(),
        chosen_units: Vec::new(),
    };
    let (dispatch_id, _) = crate::dispatch::publish(
        store,
        &templates,
        &crate::config::Config::default().livekit,
        &principal,
        &input,
        now,
    )
    .await
    .map_err(|e| anyhow::anyhow!("publishing the benchmark's dispatch: {e}"))?;
    let rows: Vec<(String, i64)> = with_db!(&store.db, |pool| {
        sqlx::query_as(
            "SELECT m.room_name, i.id FROM invitations i JOIN meetings m ON m.id = i.meeting_id \
             WHERE m.dispatch_id = $1 ORDER BY i.id",
        )
        .bind(dispatch_id)
        .fetch_all(pool)
        .await?
    });
    let rooms: std::collections::BTreeSet<&str> = rows.iter().map(|(r, _)| r.as_str()).collect();
    anyhow::ensure!(
        rooms.len() == 1,
        "the benchmark's dispatch should have one room, it has {}",
        rooms.len()
    );
    Ok(WebhookMeeting {
        room: rows[0].0.clone(),
        invitations: rows.into_iter().map(|(_, id)| id).collect(),
    })
}

/// One participant connection as the events describe it.
struct BenchConnection {
    sid: String,
    invitation_id: i64,
    joined_ms: i64,
    left_s: i64,
}

/// The events of a run, serialised once; `shares[t]` are the indices task `t` posts, in order.
struct WebhookLoad {
    /// `room_started`, posted before the timed load.
    room_started: Bytes,
    events: Vec<Bytes>,
    shares: Vec<Vec<usize>>,
    room: String,
    connections: Vec<BenchConnection>,
}

/// How many times each of `invitations` connects for `connections` in all: as evenly as
/// possible, the first ones once more.
fn connections_per_invitation(invitations: usize, connections: usize) -> impl Fn(usize) -> usize {
    let (base, extra) = (connections / invitations, connections % invitations);
    move |k| base + usize::from(k < extra)
}

impl WebhookLoad {
    fn generate(
        meeting: &WebhookMeeting,
        connections: usize,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        use livekit_protocol::participant_info::State;
        use livekit_protocol::{ParticipantInfo, ParticipantPermission, Room, WebhookEvent};

        let n = meeting.invitations.len();
        anyhow::ensure!(n > 0, "the meeting has no invitations");
        let per = connections_per_invitation(n, connections);
        // The room starts now; invitee k first joins within its first 10 minutes, and its
        // a-th connection 20 minutes after its previous one, for 10 to 15 minutes each.
        let t0_ms = Utc::now().timestamp_millis();
        let mut conns = Vec::with_capacity(connections);
        for (k, &invitation_id) in meeting.invitations.iter().enumerate() {
            for a in 0..per(k) {
                let c = conns.len();
                let joined_ms = t0_ms
                    + a as i64 * 1_200_000
                    + (k as i64 * 7_919) % 600_000
                    + (c as i64 * 13) % 1_000;
                let left_ms = joined_ms + 600_000 + (c as i64 * 104_729) % 300_000;
                conns.push(BenchConnection {
                    sid: format!("PA_b{c:08}"),
                    invitation_id,
                    joined_ms,
                    left_s: left_ms / 1000,
                });
            }
        }
        anyhow::ensure!(
            conns.len() == connections,
            "generated {} connections",
            conns.len()
        );

        let room = Room {
            sid: "RM_bench".into(),
            name: meeting.room.clone(),
            empty_timeout: 300,
            departure_timeout: 20,
            creation_time: t0_ms / 1000,
            creation_time_ms: t0_ms,
            ..Default::default()
        };
        let body = |event: &WebhookEvent| -> anyhow::Result<Bytes> {
            Ok(Bytes::from(serde_json::to_string(event)?))
        };
        let room_started = body(&WebhookEvent {
            event: "room_started".into(),
            room: Some(room.clone()),
            id: "EV_bench_room".into(),
            created_at: t0_ms / 1000,
            ..Default::default()
        })?;

        // Every event in time order, then dealt out by connection so that one task posts
        // both events of a connection, joined first.
        let mut order: Vec<(i64, usize, bool)> = conns
            .iter()
            .enumerate()
            .flat_map(|(c, conn)| [(conn.joined_ms, c, false), (conn.left_s * 1000, c, true)])
            .collect();
        order.sort_unstable();
        let mut events = Vec::with_capacity(order.len());
        let mut shares = vec![Vec::new(); concurrency];
        let mut num_participants = 0u32;
        for (seq, &(_, c, left)) in order.iter().enumerate() {
            let conn = &conns[c];
            if left {
                num_participants = num_participants.saturating_sub(1);
            } else {
                num_participants += 1;
            }
            let metadata = serde_json::json!({
                "invitation_id": conn.invitation_id,
                "meeting_id": 1,
                "unit": "基准企业",
                "person": "基准",
                "tier": "province",
                "role": "attendee",
            });
            let participant = ParticipantInfo {
                sid: conn.sid.clone(),
                identity: conn.invitation_id.to_string(),
                name: format!("基准企业 {} · 负责人", conn.invitation_id),
                metadata: metadata.to_string(),
                state: if left {
                    State::Disconnected
                } else {
                    State::Active
                } as i32,
                joined_at: conn.joined_ms / 1000,
                joined_at_ms: conn.joined_ms,
                version: if left { 3 } else { 1 },
                permission: Some(ParticipantPermission {
                    can_subscribe: true,
                    can_publish: false,
                    can_publish_data: true,
                    ..Default::default()
                }),
                region: "bench".into(),
                // ClientInitiated
                disconnect_reason: if left { 1 } else { 0 },
                ..Default::default()
            };
            events.push(body(&WebhookEvent {
                event: if left {
                    "participant_left"
                } else {
                    "participant_joined"
                }
                .into(),
                room: Some(Room {
                    num_participants,
                    ..room.clone()
                }),
                participant: Some(participant),
                id: format!("EV_b{seq:09}"),
                created_at: if left {
                    conn.left_s
                } else {
                    conn.joined_ms / 1000
                },
                ..Default::default()
            })?);
            shares[c % concurrency].push(seq);
        }
        Ok(Self {
            room_started,
            events,
            shares,
            room: meeting.room.clone(),
            connections: conns,
        })
    }

    /// Signs every body as LiveKit does, on every core: `room_started` first.
    fn sign(&self) -> anyhow::Result<Vec<HeaderValue>> {
        let bodies: Vec<&Bytes> = std::iter::once(&self.room_started)
            .chain(&self.events)
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = bodies.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = bodies
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(|b| sign_webhook(b)).collect()))
                .collect();
            let mut out = Vec::with_capacity(bodies.len());
            for h in handles {
                let part: anyhow::Result<Vec<HeaderValue>> = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("a signing thread panicked"))?;
                out.extend(part?);
            }
            Ok(out)
        })
    }
}

/// The `Authorization` header LiveKit sends with a webhook: a bare JWT whose `sha256` claim
/// is the standard base64 of the body's SHA-256.
fn sign_webhook(body: &[u8]) -> anyhow::Result<HeaderValue> {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    let jwt = livekit_api::access_token::AccessToken::with_api_key(WEBHOOK_KEY, WEBHOOK_SECRET)
        .with_sha256(&hash)
        .with_ttl(WEBHOOK_TOKEN_TTL)
        .to_jwt()
        .context("signing a webhook")?;
    Ok(HeaderValue::from_str(&jwt)?)
}

/// The HTTP client: hyper-util's pooled client, plain HTTP/1.1 with keep-alive.
///
/// Not reqwest: livekit-api already builds reqwest 0.13 with `rustls-no-provider`, under which
/// every `reqwest::Client::new()` panics unless a rustls crypto provider was installed
/// first. Moving the tests from reqwest 0.12 to 0.13 would need each of them to install one;
/// hyper-util's client (built anyway, under reqwest) needs no TLS for loopback.
#[derive(Clone)]
struct LoopbackClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl LoopbackClient {
    fn new(concurrency: usize) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(concurrency)
                .build(connector);
        Self { client }
    }

    /// Posts `room_started` (untimed), then every event, one task per share, all at once.
    async fn post_all(
        &self,
        addr: SocketAddr,
        load: &WebhookLoad,
        signed: &[HeaderValue],
    ) -> anyhow::Result<LoadResult> {
        let uri: Uri = format!("http://{addr}/livekit/webhook").parse()?;
        let mut failures = BTreeMap::new();
        let (status, body) = self
            .post(&uri, load.room_started.clone(), signed[0].clone())
            .await;
        if status != 200 {
            failures.insert(status, (1, body));
        }

        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for share in &load.shares {
            let requests: Vec<(Bytes, HeaderValue)> = share
                .iter()
                .map(|&i| (load.events[i].clone(), signed[i + 1].clone()))
                .collect();
            let (client, uri) = (self.clone(), uri.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(requests.len());
                let mut failures: Vec<(u16, String)> = Vec::new();
                for (body, auth) in requests {
                    let started = Instant::now();
                    let (status, text) = client.post(&uri, body, auth).await;
                    latencies.push(started.elapsed());
                    if status != 200 {
                        failures.push((status, text));
                    }
                }
                (latencies, failures)
            });
        }
        let mut latencies = Vec::with_capacity(load.events.len());
        while let Some(joined) = tasks.join_next().await {
            let (mut l, f) = joined.context("a client task panicked")?;
            latencies.append(&mut l);
            for (status, text) in f {
                failures.entry(status).or_insert((0, text)).0 += 1;
            }
        }
        let wall = t.elapsed();
        latencies.sort_unstable();
        Ok(LoadResult {
            wall,
            latencies,
            failures,
        })
    }

    /// One webhook: (status, body); status 0 when no response came.
    async fn post(&self, uri: &Uri, body: Bytes, authorization: HeaderValue) -> (u16, String) {
        let request = axum::http::Request::post(uri.clone())
            .header(header::AUTHORIZATION, authorization)
            .header(header::CONTENT_TYPE, "application/webhook+json")
            .body(Full::new(body))
            .expect("a valid request");
        let response = match self.client.request(request).await {
            Ok(r) => r,
            Err(e) => return (0, format!("{e:#}")),
        };
        let status = response.status().as_u16();
        match response.into_body().collect().await {
            Ok(_) if status == 200 => (status, String::new()),
            Ok(b) => (status, String::from_utf8_lossy(&b.to_bytes()).into_owned()),
            Err(e) => (0, format!("reading the response: {e}")),
        }
    }
}

/// The floor: an endpoint that verifies the signature and parses the body, and nothing else.
struct FloorServer {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Clone)]
struct FloorState {
    receiver: Arc<livekit_api::webhooks::WebhookReceiver>,
    verified: Arc<AtomicUsize>,
}

impl FloorServer {
    async fn start(verified: Arc<AtomicUsize>) -> anyhow::Result<Self> {
        let state = FloorState {
            receiver: Arc::new(livekit_api::webhooks::WebhookReceiver::new(
                livekit_api::access_token::TokenVerifier::with_api_key(WEBHOOK_KEY, WEBHOOK_SECRET),
            )),
            verified,
        };
        let app = axum::Router::new()
            .route("/livekit/webhook", axum::routing::post(floor_webhook))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the floor panicked")??;
        Ok(())
    }
}

/// As muster's handler reads the request (the bare JWT, the body as text), without storing.
async fn floor_webhook(
    State(state): State<FloorState>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match state.receiver.receive(&body, authorization) {
        Ok(event) => {
            std::hint::black_box(event);
            state.verified.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

/// Counts `webhook_events` and checks every connection of the ledger against what was sent.
async fn read_ledger(store: &Store, load: &WebhookLoad) -> anyhow::Result<Ledger> {
    let webhook_events: i64 = with_db!(&store.db, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
            .fetch_one(pool)
            .await?
    });
    let intervals = store.intervals(&load.room).await?;
    let sent: HashMap<&str, &BenchConnection> = load
        .connections
        .iter()
        .map(|c| (c.sid.as_str(), c))
        .collect();
    let mut complete = 0;
    let mut examples = Vec::new();
    for i in &intervals {
        let problem = match sent.get(i.participant_sid.as_str()) {
            None => Some("not sent".to_string()),
            Some(c) if i.invitation_id != Some(c.invitation_id) => Some(format!(
                "invitation {:?}, sent {}",
                i.invitation_id, c.invitation_id
            )),
            Some(c) if i.joined_at.map(|t| t.timestamp_millis()) != Some(c.joined_ms) => {
                Some(format!("joined_at {:?}", i.joined_at))
            }
            Some(c) if i.left_at.map(|t| t.timestamp()) != Some(c.left_s) => {
                Some(format!("left_at {:?}", i.left_at))
            }
            Some(_) => None,
        };
        match problem {
            None => complete += 1,
            Some(p) if examples.len() < 3 => examples.push(format!("{}: {p}", i.participant_sid)),
            Some(_) => {}
        }
    }
    Ok(Ledger {
        webhook_events,
        connections: intervals.len(),
        complete,
        examples,
    })
}

/// The `q`-quantile of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl WebhookReport {
    fn table(&self, opts: &WebhooksOptions) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "webhooks benchmark: {} participant events ({} connections) + room_started, \
             {} concurrent client(s) over loopback",
            2 * opts.connections,
            opts.connections,
            opts.concurrency
        );
        for b in &self.backends {
            let _ = writeln!(
                out,
                "{:<9}room {} with {} invitations ({WEBHOOK_ENTERPRISES} enterprises); setup {:.1} s, \
                 generate {:.1} s, sign {:.1} s (both phases)",
                b.name,
                b.room,
                b.invitations,
                b.setup.as_secs_f64(),
                b.generate.as_secs_f64(),
                b.sign.as_secs_f64()
            );
            for (who, load) in [("floor", &b.floor), ("muster", &b.muster)] {
                let _ = writeln!(
                    out,
                    "{:<9}{who:<7}{:>9.0} events/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>8.2} ms   \
                     {:.1} s   non-200: {}",
                    b.name,
                    load.per_second(),
                    ms(quantile(&load.latencies, 0.50)),
                    ms(quantile(&load.latencies, 0.99)),
                    ms(load.latencies.last().copied().unwrap_or_default()),
                    load.wall.as_secs_f64(),
                    load.not_ok()
                );
            }
            let ratio = b.muster.per_second() / b.floor.per_second();
            let aim = if b.name == "sqlite" {
                format!(
                    "aim >= {WEBHOOK_RATIO_AIM}   {}",
                    verdict(ratio >= WEBHOOK_RATIO_AIM)
                )
            } else {
                "(no aim)".to_string()
            };
            let _ = writeln!(out, "{:<9}ratio  {ratio:.2} of the floor   {aim}", b.name);
            let problems = b.problems();
            let _ = writeln!(
                out,
                "{:<9}accounted for: webhook_events {}/{}, connections {} complete of {}   {}",
                b.name,
                b.ledger.webhook_events,
                b.sent,
                b.ledger.complete,
                b.connections,
                if problems.is_empty() { "ok" } else { "LOST" }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "b"),
            "postgres://h:5432/b"
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let d = Duration::from_millis;
        assert_eq!(median(&[d(3), d(1), d(2)]), d(2));
        assert_eq!(
            median(&[d(4), d(1), d(2), d(3)]),
            Duration::from_micros(2500)
        );
    }

    #[test]
    fn connections_are_spread_over_invitations() {
        let per = connections_per_invitation(20_001, 50_000);
        assert_eq!((0..20_001).map(&per).sum::<usize>(), 50_000);
        assert_eq!((per(0), per(9_997), per(9_998), per(20_000)), (3, 3, 2, 2));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&samples[..1], 0.99), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn webhooks_are_signed_as_livekit_signs_them() {
        let body =
            br#"{"event":"room_started","room":{"name":"r"},"id":"EV_1","createdAt":"1700000000"}"#;
        let auth = sign_webhook(body).unwrap();
        let receiver = livekit_api::webhooks::WebhookReceiver::new(
            livekit_api::access_token::TokenVerifier::with_api_key(WEBHOOK_KEY, WEBHOOK_SECRET),
        );
        let event = receiver
            .receive(std::str::from_utf8(body).unwrap(), auth.to_str().unwrap())
            .unwrap();
        assert_eq!(event.event, "room_started");
        assert!(receiver.receive("{}", auth.to_str().unwrap()).is_err());
    }

    #[test]
    fn the_benchmark_template_is_valid() {
        let t =
            crate::domain::agenda::parse_template("bench-webhooks.toml", WEBHOOK_TEMPLATE).unwrap();
        assert_eq!(t.tiers.len(), 1);
    }

    #[test]
    fn tomorrow_nine_is_local_nine() {
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 20, 0, 0).unwrap(); // 04:00 on the 4th in Shanghai
        assert_eq!(
            tomorrow_nine(now),
            Utc.with_ymd_and_hms(2026, 12, 5, 1, 0, 0).unwrap()
        );
    }
}
