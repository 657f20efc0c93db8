//! `muster bench cascade`: how long planning and publishing a province-wide cascade takes,
//! printed beside a baseline measured in the same run on the same machine. Not a test:
//! figures depend on the machine, and a missed aim is reported, not failed.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Connection, QueryBuilder};

use crate::directory::load_demo;
use crate::domain::agenda::AgendaTemplate;
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

    let scratch = ScratchDir::create()?;
    let pg = match &opts.postgres {
        Some(url) => Some(PgScratch::create(url).await?),
        None => None,
    };
    let outcome = run(opts, template, start, &scratch, pg.as_ref()).await;
    if let Some(pg) = &pg
        && let Err(e) = pg.drop_database().await
    {
        eprintln!(
            "warning: could not drop the benchmark database {}: {e:#}",
            pg.name
        );
    }
    drop(scratch);
    print!("{}", outcome?.table(opts));
    Ok(())
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
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "muster-bench-{}-{}",
            std::process::id(),
            &crate::auth::new_token()[..8]
        ));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    fn url(&self) -> String {
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
struct PgScratch {
    admin_url: String,
    name: String,
    url: String,
}

impl PgScratch {
    async fn create(admin_url: &str) -> anyhow::Result<Self> {
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

    async fn drop_database(&self) -> anyhow::Result<()> {
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
fn with_database(url: &str, name: &str) -> String {
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    }
}

fn verdict(met: bool) -> &'static str {
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
    fn tomorrow_nine_is_local_nine() {
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 20, 0, 0).unwrap(); // 04:00 on the 4th in Shanghai
        assert_eq!(
            tomorrow_nine(now),
            Utc.with_ymd_and_hms(2026, 12, 5, 1, 0, 0).unwrap()
        );
    }
}
